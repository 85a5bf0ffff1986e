//! MaxPool and AveragePool over 1-D and 2-D windows.

use super::{Images, check_out_len, float_input, image_dims, image_shape, new_output};
use crate::isa::{self, Isa};
use accel_core::ir::{Node, Pool};
use accel_core::ops::spatial_2d;
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
                let first_col = if (oy as usize) < fast_rows {
                    fast_cols as isize
                } else {
                    0
                };
                for ox in first_col..ow as isize {
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
pub(super) fn nan_max(a: f32, b: f32) -> f32 {
    if a > b || a.is_nan() { a } else { b }
}

/// A 2x2 max pool at stride 2 of planes of [h, w] in `src` into `out` ([h / 2, w / 2] per
/// plane): what a conv with a fused MaxPool does where its kernel has no pooled epilogue.
pub(super) fn max_pool_2x2_planes(src: &[f32], [h, w]: [usize; 2], out: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    if oh * ow == 0 {
        return;
    }
    out.par_chunks_mut(oh * ow)
        .zip(src.par_chunks(h * w))
        .for_each(|(o, plane)| {
            for (y, row) in o.chunks_exact_mut(ow).enumerate() {
                let r0 = &plane[2 * y * w..][..2 * ow];
                let r1 = &plane[(2 * y + 1) * w..][..2 * ow];
                max_2x2_row(r0, r1, row);
            }
        });
}

/// max that keeps a NaN from either side: maxps returns its second operand when either is
/// NaN, so a NaN in `a` is blended back in.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
pub(super) fn nan_max256(
    a: std::arch::x86_64::__m256,
    b: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let m = _mm256_max_ps(a, b);
    _mm256_blendv_ps(m, a, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a))
}

/// [`nan_max256`] for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) fn nan_max512(
    a: std::arch::x86_64::__m512,
    b: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let m = _mm512_max_ps(a, b);
    _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, a), a)
}

/// out[x] = max of r0[2x], r0[2x+1], r1[2x], r1[2x+1].
fn max_2x2_row(r0: &[f32], r1: &[f32], out: &mut [f32]) {
    let done = match isa::active() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both AVX levels are only selected after runtime detection of avx2.
        Isa::Avx2Fma | Isa::Avx512 => unsafe { max_2x2_row_avx2(r0, r1, out) },
        _ => 0,
    };
    for ((o, a), b) in out[done..]
        .iter_mut()
        .zip(r0[2 * done..].chunks_exact(2))
        .zip(r1[2 * done..].chunks_exact(2))
    {
        *o = nan_max(nan_max(a[0], a[1]), nan_max(b[0], b[1]));
    }
}

/// Eight outputs per step: the two rows' maxima, then even and odd lanes paired by shuffles.
/// Returns how many outputs it wrote (a multiple of 8); the caller finishes the rest.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn max_2x2_row_avx2(r0: &[f32], r1: &[f32], out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let nan_max8 = nan_max256;
    let blocks = out.len() / 8;
    assert!(r0.len() >= 16 * blocks && r1.len() >= 16 * blocks);
    for i in 0..blocks {
        // SAFETY: 16 * i + 16 <= 16 * blocks values of each row (asserted) and 8 * i + 8 of out.
        unsafe {
            let (a, b) = (r0.as_ptr().add(16 * i), r1.as_ptr().add(16 * i));
            let lo = nan_max8(_mm256_loadu_ps(a), _mm256_loadu_ps(b));
            let hi = nan_max8(_mm256_loadu_ps(a.add(8)), _mm256_loadu_ps(b.add(8)));
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
            let odd = _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi);
            // Lanes now hold outputs 0 1 4 5 | 2 3 6 7.
            let m = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                nan_max8(even, odd),
            )));
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), m);
        }
    }
    8 * blocks
}
