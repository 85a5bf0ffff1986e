//! MaxPool and AveragePool over 1-D and 2-D windows.

use super::{Images, float_input, spatial_2d, zeroed_output};
use accel_core::ir::{Node, Pool};
use accel_core::ops::resolve_window;
use accel_core::{Error, Result, Tensor};
use rayon::prelude::*;

pub fn pool(node: &Node, p: &Pool, max: bool, x: &Tensor) -> Result<Tensor> {
    let Images {
        data: xv,
        n,
        c,
        hw: in_hw,
        one_d,
    } = float_input(node, x)?;
    let (kernel, window) = spatial_2d(node, &p.window.kernel_shape, &p.window, one_d)?;
    let rw = resolve_window(&window, &in_hw, &kernel, p.ceil_mode)
        .map_err(|e| Error::node(node, e.to_string()))?;
    let (oh, ow) = (rw.output[0], rw.output[1]);
    let (ih, iw) = (in_hw[0] as isize, in_hw[1] as isize);
    let (kh, kw) = (kernel[0] as isize, kernel[1] as isize);
    let (sh, sw) = (rw.strides[0] as isize, rw.strides[1] as isize);
    let (dh, dw) = (rw.dilations[0] as isize, rw.dilations[1] as isize);
    let (pt, pl) = (rw.pads_begin[0] as isize, rw.pads_begin[1] as isize);
    let (pb, pr) = (rw.pads_end[0] as isize, rw.pads_end[1] as isize);
    let mut out = zeroed_output(node, &[n, c, oh, ow])?;
    let mut shape = vec![n, c];
    shape.extend(if one_d { vec![ow] } else { vec![oh, ow] });
    if out.is_empty() {
        return Tensor::from_vec(shape, out);
    }
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane_idx, o)| {
            let plane = &xv[plane_idx * (ih * iw) as usize..(plane_idx + 1) * (ih * iw) as usize];
            for oy in 0..oh as isize {
                for ox in 0..ow as isize {
                    let (y0, x0) = (oy * sh - pt, ox * sw - pl);
                    let inside =
                        y0 >= 0 && x0 >= 0 && y0 + (kh - 1) * dh < ih && x0 + (kw - 1) * dw < iw;
                    if max && inside {
                        // Common case: the whole window is inside the input, no bounds checks.
                        let mut acc = f32::NEG_INFINITY;
                        for ky in 0..kh {
                            let row = &plane[((y0 + ky * dh) * iw + x0) as usize..];
                            for kx in 0..kw {
                                let v = row[(kx * dw) as usize];
                                if v > acc || v.is_nan() {
                                    acc = v;
                                }
                            }
                        }
                        o[(oy * ow as isize + ox) as usize] = acc;
                        continue;
                    }
                    let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                    let mut count = 0usize;
                    let mut padded_count = 0usize;
                    for ky in 0..kh {
                        let y = y0 + ky * dh;
                        for kx in 0..kw {
                            let xx = x0 + kx * dw;
                            if y >= 0 && y < ih && xx >= 0 && xx < iw {
                                let v = plane[(y * iw + xx) as usize];
                                // A NaN wins, so NaN propagates.
                                if max {
                                    if v > acc || v.is_nan() {
                                        acc = v;
                                    }
                                } else {
                                    acc += v;
                                }
                                count += 1;
                            }
                            // count_include_pad counts explicit padding, not the ceil_mode overhang.
                            if y >= -pt && y < ih + pb && xx >= -pl && xx < iw + pr {
                                padded_count += 1;
                            }
                        }
                    }
                    o[(oy * ow as isize + ox) as usize] = if max {
                        acc
                    } else {
                        acc / (if p.count_include_pad {
                            padded_count
                        } else {
                            count
                        })
                        .max(1) as f32
                    };
                }
            }
        });
    Tensor::from_vec(shape, out)
}
