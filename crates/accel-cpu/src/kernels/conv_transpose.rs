//! ConvTranspose as GEMM + col2im: cols[(oc, ky, kx), pixel] = W^T · X, then each column is
//! scattered into the output window it came from.
//!
//! The sub-pixel decomposition (each output phase a stride-1 implicit GEMM over the padded
//! input, no cols buffer) was built and measured against this on the U-Net's decoder: it lost
//! on every layer (up1-up3 1.29-1.57 ms against 1.02-1.28 ms, one thread, Zen 3), since a
//! phase's GEMM has only the layer's output channels as rows (16 to 64), so each B panel
//! serves few tiles, and narrow images pad the phase grid.

use super::conv::copy_panel;
use super::gemm::{Blocking, Epilogue, PackedA, gemm_fill_b};
use super::{Images, check_out_len, float_input, image_dims, image_shape, new_output, spatial_2d};
use crate::scratch::Scratch;
use accel_core::ir::{ConvTranspose, Node};
use accel_core::ops::{ResolvedWindow, resolve_conv_transpose};
use accel_core::{Error, Result, Tensor, TensorView};
use rayon::prelude::*;

pub struct ConvTransposeKernel {
    attrs: ConvTranspose,
    in_channels: usize,
    out_channels_per_group: usize,
    kernel: Vec<usize>,
    /// Per group: W_g^T as [ocg * kh * kw, icg].
    packed: Vec<PackedA>,
    bias: Vec<f32>,
}

impl ConvTransposeKernel {
    pub fn new(
        node: &Node,
        attrs: &ConvTranspose,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<ConvTransposeKernel> {
        let wv = w
            .as_slice::<f32>()
            .map_err(|e| Error::node(node, e.to_string()))?;
        let ws = w.shape();
        if ws.len() < 3 || ws.len() > 4 {
            return Err(Error::node(
                node,
                format!("only 1-D and 2-D ConvTranspose is supported (weight shape {ws:?})"),
            ));
        }
        let g = attrs.group;
        let (ic, ocg) = (ws[0], ws[1]);
        if g == 0 || ic % g != 0 {
            return Err(Error::node(
                node,
                format!("{ic} input channels do not split into {g} groups"),
            ));
        }
        let icg = ic / g;
        let kernel = ws[2..].to_vec();
        if !attrs.window.kernel_shape.is_empty() && attrs.window.kernel_shape != kernel {
            return Err(Error::node(
                node,
                format!(
                    "kernel_shape {:?} does not match the weights' kernel {kernel:?}",
                    attrs.window.kernel_shape
                ),
            ));
        }
        let m = ocg * kernel.iter().product::<usize>();
        let packed = (0..g)
            .map(|gi| PackedA::pack(&wv[gi * icg * m..], m, icg, 1, m))
            .collect();
        let bias = match b {
            Some(b) => b.to_f32_vec()?,
            None => vec![0.0; ocg * g],
        };
        if bias.len() != ocg * g {
            return Err(Error::node(
                node,
                format!(
                    "bias has {} values for {} output channels",
                    bias.len(),
                    ocg * g
                ),
            ));
        }
        Ok(ConvTransposeKernel {
            attrs: attrs.clone(),
            in_channels: ic,
            out_channels_per_group: ocg,
            kernel,
            packed,
            bias,
        })
    }

    /// Holds the packed weights as f16 from now on.
    pub fn use_f16_weights(&mut self) {
        self.packed = self.packed.iter().map(PackedA::to_f16).collect();
    }

    /// Bytes of weights this kernel holds.
    pub fn weight_bytes(&self) -> usize {
        self.packed.iter().map(PackedA::bytes).sum::<usize>() + self.bias.len() * 4
    }

    /// Output shape for an input of `x_shape`.
    pub fn output_shape(&self, node: &Node, x_shape: &[usize]) -> Result<Vec<usize>> {
        Ok(self.geometry(node, x_shape)?.0)
    }

    pub fn run(&self, node: &Node, x: TensorView) -> Result<Tensor> {
        let shape = self.output_shape(node, x.shape())?;
        new_output(node, shape, |out| self.run_into(node, x, out))
    }

    fn geometry(
        &self,
        node: &Node,
        x_shape: &[usize],
    ) -> Result<(Vec<usize>, ResolvedWindow, [usize; 2])> {
        let (n, c, in_hw, one_d) = image_dims(node, x_shape)?;
        if c != self.in_channels {
            return Err(Error::node(
                node,
                format!(
                    "input has {c} channels, the weights expect {}",
                    self.in_channels
                ),
            ));
        }
        let (kernel, window) = spatial_2d(node, &self.kernel, &self.attrs.window, one_d)?;
        let spatial = if one_d { 1 } else { 2 };
        let opad_len = self.attrs.output_padding.len();
        let oshape_len = self.attrs.output_shape.as_ref().map_or(spatial, Vec::len);
        if (opad_len != 0 && opad_len != spatial) || !(spatial..=spatial + 2).contains(&oshape_len)
        {
            return Err(Error::node(
                node,
                format!(
                    "output_padding {:?} / output_shape {:?} do not fit {spatial} spatial axis/axes",
                    self.attrs.output_padding, self.attrs.output_shape
                ),
            ));
        }
        let (opad, oshape) = if one_d {
            let op = if self.attrs.output_padding.is_empty() {
                vec![]
            } else {
                vec![0, self.attrs.output_padding[0]]
            };
            (
                op,
                self.attrs
                    .output_shape
                    .as_ref()
                    .map(|s| vec![1, *s.last().unwrap_or(&1)]),
            )
        } else {
            (
                self.attrs.output_padding.clone(),
                self.attrs.output_shape.clone(),
            )
        };
        let rw = resolve_conv_transpose(&window, &in_hw, &kernel, &opad, oshape.as_deref())
            .map_err(|e| Error::node(node, e.to_string()))?;
        let (oh, ow) = (rw.output[0], rw.output[1]);
        let oc = self.out_channels_per_group * self.attrs.group;
        Ok((
            image_shape(n, oc, [oh, ow], one_d),
            rw,
            [kernel[0], kernel[1]],
        ))
    }

    /// Writes the output into `out` (every element; its old contents do not matter).
    pub fn run_into(&self, node: &Node, x: TensorView, out: &mut [f32]) -> Result<()> {
        let (shape, rw, [kh, kw]) = self.geometry(node, x.shape())?;
        check_out_len(node, &shape, out)?;
        let Images {
            data: xv,
            n,
            c,
            hw: in_hw,
            ..
        } = float_input(node, &x)?;
        let (oh, ow) = (rw.output[0], rw.output[1]);
        let g = self.attrs.group;
        let (icg, ocg) = (self.in_channels / g, self.out_channels_per_group);
        let oc = ocg * g;
        let pixels = in_hw[0] * in_hw[1];
        // Every element of cols is written by the GEMM.
        let mut cols = Scratch::zeroed(ocg * kh * kw * pixels);
        for b in 0..n {
            for gi in 0..g {
                let xg = &xv[(b * c + gi * icg) * pixels..(b * c + (gi + 1) * icg) * pixels];
                // X's column panels are copied right before use instead of packing all of
                // X first: the same copy, but into a panel that is hot in L1.
                let nr = Blocking::active().nr;
                let fill =
                    |pj: usize, panel: &mut [f32]| copy_panel(xg, icg, pixels, pj, nr, panel);
                gemm_fill_b(
                    &self.packed[gi],
                    pixels,
                    &fill,
                    &mut cols,
                    pixels,
                    Epilogue::NONE,
                );
                let og =
                    &mut out[(b * oc + gi * ocg) * oh * ow..(b * oc + (gi + 1) * ocg) * oh * ow];
                // Output rows in blocks, so a layer with few output channels (the U-Net's
                // last, with one) still spreads over every thread; each row is finished
                // (bias, every tap, activation) while it is hot.
                let threads = rayon::current_num_threads();
                let rows_per_task = if ocg >= 2 * threads {
                    oh
                } else {
                    oh.div_ceil((2 * threads).div_ceil(ocg.max(1))).max(1)
                };
                let bias = &self.bias[gi * ocg..(gi + 1) * ocg];
                let act = self.attrs.activation;
                og.par_chunks_mut(oh * ow)
                    .enumerate()
                    .for_each(|(o, plane)| {
                        let taps = &cols[o * kh * kw * pixels..(o + 1) * kh * kw * pixels];
                        plane
                            .par_chunks_mut(rows_per_task * ow)
                            .enumerate()
                            .for_each(|(i, block)| {
                                block.fill(bias[o]);
                                col2im_rows(taps, block, i * rows_per_task, in_hw, [oh, ow], &rw);
                                if let Some(a) = act {
                                    super::activation::apply_slice(a, block);
                                }
                            });
                    });
            }
        }
        Ok(())
    }
}

/// Adds cols[(ky, kx), (iy, ix)] into out[iy*sh - pt + ky*dh, ix*sw - pl + kx*dw] for the
/// output rows y0.. that `out` holds (whole rows of the output's width).
fn col2im_rows(
    cols: &[f32],
    out: &mut [f32],
    y0: usize,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    rw: &accel_core::ops::ResolvedWindow,
) {
    let (ih, iw) = (in_hw[0], in_hw[1]);
    let ow = out_hw[1] as isize;
    let (kh, kw) = (rw.kernel[0], rw.kernel[1]);
    let (sh, sw) = (rw.strides[0] as isize, rw.strides[1] as isize);
    let (dh, dw) = (rw.dilations[0] as isize, rw.dilations[1] as isize);
    let (pt, pl) = (rw.pads_begin[0] as isize, rw.pads_begin[1] as isize);
    for (r, orow) in out.chunks_exact_mut(ow as usize).enumerate() {
        let oy = (y0 + r) as isize;
        for ky in 0..kh {
            // The input row that tap ky brings to this output row, if any.
            let num = oy + pt - ky as isize * dh;
            if num < 0 || num % sh != 0 || num / sh >= ih as isize {
                continue;
            }
            let iy = (num / sh) as usize;
            for kx in 0..kw {
                let src = &cols[(ky * kw + kx) * ih * iw..][..ih * iw];
                let srow = &src[iy * iw..(iy + 1) * iw];
                let off = kx as isize * dw - pl;
                // Input columns whose ox = ix * sw + off lands in the row, found once so the
                // loop below has no branch.
                let lo = if off < 0 { (-off + sw - 1) / sw } else { 0 };
                let hi = if off >= ow {
                    0
                } else {
                    ((ow - 1 - off) / sw + 1).min(iw as isize)
                };
                if lo >= hi {
                    continue;
                }
                let first = (lo * sw + off) as usize;
                let srow = &srow[lo as usize..hi as usize];
                if sw == 1 {
                    orow[first..first + srow.len()]
                        .iter_mut()
                        .zip(srow)
                        .for_each(|(o, &v)| *o += v);
                } else {
                    orow[first..]
                        .iter_mut()
                        .step_by(sw as usize)
                        .zip(srow)
                        .for_each(|(o, &v)| *o += v);
                }
            }
        }
    }
}
