//! MaxPool and AveragePool over 1-D and 2-D windows.

use super::{Images, check_out_len, float_input, image_dims, image_shape, new_output, spatial_2d};
use accel_core::ir::{Node, Pool};
use accel_core::ops::{ResolvedWindow, resolve_window};
use accel_core::{Error, Result, Tensor, TensorView};
use rayon::prelude::*;

pub fn pool(node: &Node, p: &Pool, max: bool, x: TensorView) -> Result<Tensor> {
    let (shape, _, _) = geometry(node, p, x.shape())?;
    new_output(node, shape, |out| pool_into(node, p, max, x, out))
}

/// Output shape of a pool over an input of `x_shape`.
pub fn pool_shape(node: &Node, p: &Pool, x_shape: &[usize]) -> Result<Vec<usize>> {
    Ok(geometry(node, p, x_shape)?.0)
}

fn geometry(
    node: &Node,
    p: &Pool,
    x_shape: &[usize],
) -> Result<(Vec<usize>, ResolvedWindow, Vec<usize>)> {
    let (n, c, in_hw, one_d) = image_dims(node, x_shape)?;
    let (kernel, window) = spatial_2d(node, &p.window.kernel_shape, &p.window, one_d)?;
    let rw = resolve_window(&window, &in_hw, &kernel, p.ceil_mode)
        .map_err(|e| Error::node(node, e.to_string()))?;
    let (oh, ow) = (rw.output[0], rw.output[1]);
    Ok((image_shape(n, c, [oh, ow], one_d), rw, kernel))
}

/// Writes the pooled output into `out` (every element).
pub fn pool_into(node: &Node, p: &Pool, max: bool, x: TensorView, out: &mut [f32]) -> Result<()> {
    let (shape, rw, kernel) = geometry(node, p, x.shape())?;
    check_out_len(node, &shape, out)?;
    let Images {
        data: xv,
        hw: in_hw,
        ..
    } = float_input(node, &x)?;
    let (oh, ow) = (rw.output[0], rw.output[1]);
    let (ih, iw) = (in_hw[0] as isize, in_hw[1] as isize);
    let (kh, kw) = (kernel[0] as isize, kernel[1] as isize);
    let (sh, sw) = (rw.strides[0] as isize, rw.strides[1] as isize);
    let (dh, dw) = (rw.dilations[0] as isize, rw.dilations[1] as isize);
    let (pt, pl) = (rw.pads_begin[0] as isize, rw.pads_begin[1] as isize);
    let (pb, pr) = (rw.pads_end[0] as isize, rw.pads_end[1] as isize);
    if out.is_empty() {
        return Ok(());
    }
    // 2x2 windows at stride 2 without padding (the CRNN's pools): whole rows at a time.
    let pairs =
        max && kh == 2 && kw == 2 && sh == 2 && sw == 2 && dh == 1 && dw == 1 && pt == 0 && pl == 0;
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(plane_idx, o)| {
            let plane = &xv[plane_idx * (ih * iw) as usize..(plane_idx + 1) * (ih * iw) as usize];
            // Rows and columns whose windows lie inside the input; ceil_mode's overhang, if
            // any, goes through the general loop below.
            let (fast_rows, fast_cols) = if pairs {
                ((ih as usize / 2).min(oh), (iw as usize / 2).min(ow))
            } else {
                (0, 0)
            };
            for oy in 0..fast_rows {
                let r0 = &plane[2 * oy * iw as usize..][..2 * fast_cols];
                let r1 = &plane[(2 * oy + 1) * iw as usize..][..2 * fast_cols];
                max_2x2_row(r0, r1, &mut o[oy * ow..oy * ow + fast_cols]);
            }
            for oy in 0..oh as isize {
                for ox in 0..ow as isize {
                    if (oy as usize) < fast_rows && (ox as usize) < fast_cols {
                        continue;
                    }
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
    Ok(())
}

/// NaN-propagating max, branch-free so row loops vectorize.
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if a > b || a.is_nan() { a } else { b }
}

/// out[x] = max of r0[2x], r0[2x+1], r1[2x], r1[2x+1].
fn max_2x2_row(r0: &[f32], r1: &[f32], out: &mut [f32]) {
    for ((o, a), b) in out
        .iter_mut()
        .zip(r0.chunks_exact(2))
        .zip(r1.chunks_exact(2))
    {
        *o = nan_max(nan_max(a[0], a[1]), nan_max(b[0], b[1]));
    }
}
