//! Conv: packed-GEMM convolution whose B panels are gathered from the input (a plain 1x1)
//! or from a zero-bordered, stride-phase-split copy of it (k x k at any stride), with a
//! general im2col for rows narrower than a panel; depthwise ones go to `depthwise`. Deep 3x3
//! stride-1 convs on wide enough inputs go to Winograd F(4x4, 3x3) (`winograd`). A conv may
//! take the 2x2 max pool after it ([`ConvKernel::fuse_max_pool`]).

use super::conv_direct::DirectConv;
use super::depthwise::depthwise;
use super::gemm::{Bias, Blocking, Epilogue, ImplicitB, PackedA, gemm_fill_b, gemm_implicit};
use super::pool::max_pool_2x2_planes;
use super::winograd::Winograd;
use super::{Images, check_out_len, float_input, image_dims, image_shape, new_output};
use crate::scratch::Scratch;
use accel_core::ir::{AutoPad, Conv, Node, Pool};
use accel_core::ops::spatial_2d;
use accel_core::ops::{ResolvedWindow, resolve_window};
use accel_core::{Error, Result, Tensor, TensorView};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Weights as [groups] packed A matrices of [oc/g, ic/g * kh * kw].
pub struct ConvKernel {
    attrs: Conv,
    out_channels: usize,
    in_channels_per_group: usize,
    kernel: Vec<usize>,
    packed: Vec<PackedA>,
    /// Depthwise weights [C, kh*kw] when every group has one input and one output channel.
    depthwise: Option<Vec<f32>>,
    /// Stem convs on AVX-512F: the direct kernel (see `conv_direct`), instead of `packed`.
    direct: Option<DirectConv>,
    /// 3x3 stride-1 convs deep enough for it: the filters in the Winograd domain, used for
    /// inputs wide enough ([`Winograd::fits`]); `packed` serves the others.
    winograd: Option<Winograd>,
    /// A following MaxPool (2x2 window, stride 2, no padding) taken into this conv: the
    /// output is the pooled one ([`ConvKernel::fuse_max_pool`]).
    pool: Option<Pool>,
    bias: Vec<f32>,
    /// The implicit GEMM's row offsets for the last padded input size seen.
    offsets: Mutex<Option<TapOffsets>>,
}

/// Where row p = (channel, ky, kx) of a convolution's gathered B starts, relative to the
/// output pixel's window origin, in a padded, phase-split input of `plane` (see
/// [`padded_plane`]).
struct TapOffsets {
    plane: [usize; 2],
    offsets: Arc<[usize]>,
}

impl ConvKernel {
    pub fn new(node: &Node, attrs: &Conv, w: &Tensor, b: Option<&Tensor>) -> Result<ConvKernel> {
        let wv = w
            .as_slice::<f32>()
            .map_err(|e| Error::node(node, e.to_string()))?;
        let ws = w.shape();
        if ws.len() < 3 || ws.len() > 4 {
            return Err(Error::node(
                node,
                format!("only 1-D and 2-D convolutions are supported (weight shape {ws:?})"),
            ));
        }
        let (oc, icg) = (ws[0], ws[1]);
        let g = attrs.group;
        if g == 0 || oc % g != 0 {
            return Err(Error::node(
                node,
                format!("{oc} output channels do not split into {g} groups"),
            ));
        }
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
        let k = icg * kernel.iter().product::<usize>();
        let ocg = oc / g;
        let depthwise = (icg == 1 && ocg == 1 && g > 1).then(|| wv.to_vec());
        let kernel_2d = if kernel.len() == 1 {
            [1, kernel[0]]
        } else {
            [kernel[0], kernel[1]]
        };
        let direct = DirectConv::for_conv(wv, oc, icg, g, kernel_2d, &attrs.window);
        let winograd = match direct {
            None => Winograd::for_conv(wv, oc, icg, g, kernel_2d, &attrs.window),
            Some(_) => None,
        };
        let packed = if depthwise.is_some() || direct.is_some() {
            vec![]
        } else {
            (0..g)
                .map(|gi| PackedA::pack(&wv[gi * ocg * k..], ocg, k, k, 1))
                .collect()
        };
        let bias = match b {
            Some(b) => b.to_f32_vec()?,
            None => vec![0.0; oc],
        };
        if bias.len() != oc {
            return Err(Error::node(
                node,
                format!("bias has {} values for {oc} output channels", bias.len()),
            ));
        }
        Ok(ConvKernel {
            attrs: attrs.clone(),
            out_channels: oc,
            in_channels_per_group: icg,
            kernel,
            packed,
            depthwise,
            direct,
            winograd,
            pool: None,
            bias,
            offsets: Mutex::new(None),
        })
    }

    /// Takes MaxPool `pool` that reads this conv's output into the conv, if it is a 2x2
    /// window at stride 2 without padding or dilation. The direct kernel pools each pair of
    /// output rows and the Winograd kernel each 4x4 tile while they are in registers, so
    /// the conv's full-size output is never written (the CRNN's conv1 and conv2: 2.2 and
    /// 1.1 MB written and read back); other paths write it to scratch and pool that. Every
    /// activation the conv may carry is non-decreasing, so it commutes with the max.
    pub fn fuse_max_pool(&mut self, pool: &Pool) -> bool {
        let w = &pool.window;
        let ones = |v: &[usize]| v.iter().all(|&d| d == 1);
        let fits = self.kernel.len() == 2
            && w.kernel_shape == [2, 2]
            && w.strides == [2, 2]
            && ones(&w.dilations)
            && w.pads.iter().all(|&p| p == 0)
            && w.auto_pad == AutoPad::NotSet
            && !pool.ceil_mode;
        if fits {
            self.pool = Some(pool.clone());
        }
        fits
    }

    /// Holds the GEMM-packed weights as f16 from now on.
    pub fn use_f16_weights(&mut self) {
        self.packed = self.packed.iter().map(PackedA::to_f16).collect();
        if let Some(w) = &mut self.winograd {
            w.use_f16();
        }
    }

    /// Bytes of weights this kernel holds.
    pub fn weight_bytes(&self) -> usize {
        self.packed.iter().map(PackedA::bytes).sum::<usize>()
            + self.depthwise.as_ref().map_or(0, |w| w.len() * 4)
            + self.direct.as_ref().map_or(0, DirectConv::bytes)
            + self.winograd.as_ref().map_or(0, Winograd::bytes)
            + self.bias.len() * 4
    }

    /// Output shape for an input of `x_shape`.
    pub fn output_shape(&self, node: &Node, x_shape: &[usize]) -> Result<Vec<usize>> {
        Ok(self.geometry(node, x_shape)?.0)
    }

    fn geometry(&self, node: &Node, x_shape: &[usize]) -> Result<(Vec<usize>, ResolvedWindow)> {
        let (n, c, in_hw, one_d) = image_dims(node, x_shape)?;
        let g = self.attrs.group;
        if c != self.in_channels_per_group * g {
            return Err(Error::node(
                node,
                format!(
                    "input has {c} channels, the weights expect {}",
                    self.in_channels_per_group * g
                ),
            ));
        }
        let (kernel, window) = spatial_2d(node, &self.kernel, &self.attrs.window, one_d)?;
        let rw = resolve_window(&window, &in_hw, &kernel, false)
            .map_err(|e| Error::node(node, e.to_string()))?;
        let (oh, ow) = (rw.output[0], rw.output[1]);
        let out_hw = match &self.pool {
            // The pool's own window resolution, so that an output too small for it fails as
            // the MaxPool would.
            Some(p) => {
                let pooled = resolve_window(&p.window, &[oh, ow], &[2, 2], false).map_err(|e| {
                    Error::node(node, format!("the fused 2x2 MaxPool after it: {e}"))
                })?;
                [pooled.output[0], pooled.output[1]]
            }
            None => [oh, ow],
        };
        Ok((image_shape(n, self.out_channels, out_hw, one_d), rw))
    }

    /// `residual`, when given, is added to the output last (a fused residual Add).
    pub fn run(&self, node: &Node, x: TensorView, residual: Option<TensorView>) -> Result<Tensor> {
        let shape = self.output_shape(node, x.shape())?;
        new_output(node, shape, |out| self.run_into(node, x, residual, out))
    }

    /// Writes the output into `out` (every element; its old contents do not matter).
    pub fn run_into(
        &self,
        node: &Node,
        x: TensorView,
        residual: Option<TensorView>,
        out: &mut [f32],
    ) -> Result<()> {
        let (shape, rw) = self.geometry(node, x.shape())?;
        check_out_len(node, &shape, out)?;
        let residual = match residual {
            Some(r) if r.shape() == shape.as_slice() => Some(
                r.as_slice::<f32>()
                    .map_err(|e| Error::node(node, e.to_string()))?,
            ),
            Some(r) => {
                return Err(Error::node(
                    node,
                    format!(
                        "the fused residual has shape {:?}, the output {shape:?}",
                        r.shape()
                    ),
                ));
            }
            None => None,
        };
        if self.pool.is_some() && residual.is_some() {
            return Err(Error::node(
                node,
                "a conv with a fused MaxPool cannot also take a fused residual",
            ));
        }
        let Images {
            data: xv,
            n,
            c,
            hw: in_hw,
            ..
        } = float_input(node, &x)?;
        let plane_in = c * in_hw[0] * in_hw[1];
        let plane_out = shape.iter().skip(1).product::<usize>();
        // An empty output (a zero-sized axis) has nothing to compute.
        let n = if plane_out == 0 { 0 } else { n };
        if let (None, Some(d), true) = (&self.depthwise, &self.direct, n > 0) {
            // Images side by side: within one, the stem's padding copy is serial and its few
            // output-channel blocks (four for the U-Net's 16) leave a thread idle.
            let act = self.attrs.activation;
            out[..n * plane_out]
                .par_chunks_mut(plane_out)
                .enumerate()
                .for_each(|(b, ob)| {
                    d.run(
                        &xv[b * plane_in..(b + 1) * plane_in],
                        in_hw,
                        &rw,
                        &self.bias,
                        act,
                        self.pool.is_some(),
                        ob,
                    );
                    if let Some(r) = residual {
                        let rb = &r[b * plane_out..(b + 1) * plane_out];
                        ob.iter_mut().zip(rb).for_each(|(o, &v)| *o += v);
                    }
                });
            return Ok(());
        }
        let images = Images {
            data: xv,
            n,
            c,
            hw: in_hw,
        };
        match (&self.pool, &self.depthwise, &self.winograd) {
            (None, ..) => self.run_images(&images, &rw, residual, false, out),
            (Some(_), None, Some(w)) if w.fits(&rw) => {
                self.run_images(&images, &rw, None, true, out)
            }
            (Some(_), ..) => {
                // No pooled epilogue on this path: the conv into scratch, then the pool.
                let full = self.out_channels * rw.output[0] * rw.output[1];
                let mut conv = Scratch::new();
                let conv = conv.reset_for_overwrite(n * full);
                self.run_images(&images, &rw, None, false, conv);
                max_pool_2x2_planes(
                    conv,
                    [rw.output[0], rw.output[1]],
                    &mut out[..n * plane_out],
                );
            }
        }
        Ok(())
    }

    /// The non-direct paths, image by image, into `out` (the pooled output with `pooled`,
    /// which only the Winograd kernel takes).
    fn run_images(
        &self,
        x: &Images,
        rw: &ResolvedWindow,
        residual: Option<&[f32]>,
        pooled: bool,
        out: &mut [f32],
    ) {
        let (c, in_hw) = (x.c, x.hw);
        let plane_in = c * in_hw[0] * in_hw[1];
        let plane_out = out.len() / x.n.max(1);
        let act = self.attrs.activation;
        for b in 0..x.n {
            let xb = &x.data[b * plane_in..(b + 1) * plane_in];
            let ob = &mut out[b * plane_out..(b + 1) * plane_out];
            let rb = residual.map(|r| &r[b * plane_out..(b + 1) * plane_out]);
            match (&self.depthwise, &self.winograd) {
                (Some(w), _) => depthwise(xb, w, &self.bias, ob, c, in_hw, rw, act, rb),
                (None, Some(w)) if w.fits(rw) => {
                    w.run(xb, in_hw, rw, &self.bias, act, rb, pooled, ob)
                }
                _ => self.grouped_gemm(xb, ob, rb, in_hw, rw),
            }
        }
    }

    fn grouped_gemm(
        &self,
        x: &[f32],
        out: &mut [f32],
        residual: Option<&[f32]>,
        in_hw: [usize; 2],
        rw: &ResolvedWindow,
    ) {
        let g = self.attrs.group;
        let icg = self.in_channels_per_group;
        let ocg = self.out_channels / g;
        let (oh, ow) = (rw.output[0], rw.output[1]);
        let pixels = oh * ow;
        let plain = rw.kernel == [1, 1]
            && rw.strides == [1, 1]
            && rw.pads_begin == [0, 0]
            && rw.pads_end == [0, 0];
        let nr = Blocking::active().nr;
        let epilogue = |gi: usize| Epilogue {
            bias: Bias::Row(&self.bias[gi * ocg..(gi + 1) * ocg]),
            activation: self.attrs.activation,
            residual: residual.map(|r| &r[gi * ocg * pixels..(gi + 1) * ocg * pixels]),
        };
        // Each B panel is gathered straight from the input (a plain 1x1 conv) or from a
        // zero-bordered copy of it whose rows are split into `stride` column phases, one
        // panel per output row segment: every panel row is then one contiguous run. Rows
        // much narrower than a panel would waste most of each tile, so they keep the
        // general im2col.
        if plain || ow * 4 >= nr * 3 {
            let mut padded = Scratch::new();
            let (data, plane, offsets) = if plain {
                // One row of all pixels: a 1x1 conv's panels never wrap; tap c is channel c.
                let plane = [1, pixels];
                (x, plane, self.tap_offsets(icg, plane, rw))
            } else {
                let plane = padded_plane(rw);
                let data = pad_input(x, g * icg, in_hw, rw, plane, &mut padded);
                (data, plane, self.tap_offsets(icg, plane, rw))
            };
            // Output row oy starts at padded row oy * stride_y, each padded row being
            // stride_x phase rows of plane[1] values.
            let (rows, width, row_stride) = if plain {
                (1, pixels, 0)
            } else {
                (oh, ow, rw.strides[0] * rw.strides[1] * plane[1])
            };
            for gi in 0..g {
                let xg = &data[gi * icg * plane[0] * plane[1]..];
                let b = ImplicitB::new(xg, &offsets, rows, width, row_stride);
                let c = &mut out[gi * ocg * pixels..(gi + 1) * ocg * pixels];
                gemm_implicit(&self.packed[gi], &b, c, pixels, epilogue(gi));
            }
            return;
        }
        for gi in 0..g {
            let xg = &x[gi * icg * in_hw[0] * in_hw[1]..(gi + 1) * icg * in_hw[0] * in_hw[1]];
            let fill =
                |pj: usize, panel: &mut [f32]| im2col_panel(xg, icg, in_hw, rw, pj, nr, panel);
            let c = &mut out[gi * ocg * pixels..(gi + 1) * ocg * pixels];
            gemm_fill_b(&self.packed[gi], pixels, &fill, c, pixels, epilogue(gi));
        }
    }

    /// Row offsets of the implicit B for a padded input plane, cached for the last plane.
    fn tap_offsets(&self, channels: usize, plane: [usize; 2], rw: &ResolvedWindow) -> Arc<[usize]> {
        let mut cached = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cached.as_ref().filter(|t| t.plane == plane) {
            return t.offsets.clone();
        }
        let (kh, kw) = (rw.kernel[0], rw.kernel[1]);
        let (dh, dw) = (rw.dilations[0], rw.dilations[1]);
        let sw = rw.strides[1];
        // Tap (ky, kx) of output column ox reads padded column ox * sw + kx * dw: phase
        // (kx * dw) % sw of the padded row ky * dh, column ox + (kx * dw) / sw.
        let offsets: Arc<[usize]> = (0..channels)
            .flat_map(|c| {
                (0..kh).flat_map(move |ky| {
                    (0..kw).map(move |kx| {
                        let row = ky * dh * sw + (kx * dw) % sw;
                        c * plane[0] * plane[1] + row * plane[1] + (kx * dw) / sw
                    })
                })
            })
            .collect();
        *cached = Some(TapOffsets {
            plane,
            offsets: offsets.clone(),
        });
        offsets
    }
}

/// [phase rows, phase width] of a convolution's zero-bordered input: every padded row the
/// windows reach, each split into `stride_x` phase rows (padded column x goes to phase
/// x % stride_x at x / stride_x), so that a tap's reads along an output row are contiguous.
fn padded_plane(rw: &ResolvedWindow) -> [usize; 2] {
    let span =
        |i: usize| (rw.output[i] - 1) * rw.strides[i] + (rw.kernel[i] - 1) * rw.dilations[i] + 1;
    let sw = rw.strides[1];
    [span(0) * sw, span(1).div_ceil(sw)]
}

/// The input's channels in zero-bordered, phase-split planes of `plane` (see
/// [`padded_plane`]), the data starting at the leading pads. An unpadded stride-1 input is
/// used as it is.
fn pad_input<'a>(
    x: &'a [f32],
    channels: usize,
    [ih, iw]: [usize; 2],
    rw: &ResolvedWindow,
    plane: [usize; 2],
    buf: &'a mut Scratch,
) -> &'a [f32] {
    let sw = rw.strides[1];
    let (pt, pl) = (rw.pads_begin[0], rw.pads_begin[1]);
    // The input itself when it is exactly the padded layout. A plane of the input's size is
    // not enough: with a stride the windows may stop short of the last rows, leaving room
    // for a leading pad in the same size.
    if sw == 1 && pt == 0 && pl == 0 && plane == [ih, iw] {
        return x;
    }
    let (rows, width) = (plane[0] / sw, plane[1] * sw);
    // Input rows and columns past the padded span (a pad_end shorter than the windows
    // need) are never read.
    let (used_rows, cols) = (
        ih.min(rows.saturating_sub(pt)),
        iw.min(width.saturating_sub(pl)),
    );
    let data = buf.reset_zeroed(channels * plane[0] * plane[1]);
    for c in 0..channels {
        for y in 0..used_rows {
            let src = &x[(c * ih + y) * iw..][..cols];
            let row0 = (c * rows + pt + y) * sw;
            if sw == 1 {
                data[row0 * plane[1] + pl..][..cols].copy_from_slice(src);
                continue;
            }
            split_phases(src, pl, sw, plane[1], &mut data[row0 * plane[1]..]);
        }
    }
    data
}

/// Writes `src`, a row placed at padded column `left`, into `stride` phase rows of `width`
/// values at `dst`: padded column x goes to phase x % stride, position x / stride. One
/// strided pass per phase, so there is no division per value.
fn split_phases(src: &[f32], left: usize, stride: usize, width: usize, dst: &mut [f32]) {
    for start in 0..stride.min(src.len()) {
        let x = left + start;
        let phase = &mut dst[(x % stride) * width + x / stride..];
        for (d, &v) in phase.iter_mut().zip(src[start..].iter().step_by(stride)) {
            *d = v;
        }
    }
}

/// Fills column panel `pj` (`nr` wide) of the im2col matrix in packed-B layout: row p =
/// (channel, ky, kx), column = output pixel. `panel` arrives with stale values: it is
/// zeroed first, so padding needs no writes.
fn im2col_panel(
    x: &[f32],
    channels: usize,
    in_hw: [usize; 2],
    rw: &ResolvedWindow,
    pj: usize,
    nr: usize,
    panel: &mut [f32],
) {
    let (kh, kw) = (rw.kernel[0], rw.kernel[1]);
    let (oh, ow) = (rw.output[0], rw.output[1]);
    let (ih, iw) = (in_hw[0] as isize, in_hw[1] as isize);
    let (sh, sw) = (rw.strides[0] as isize, rw.strides[1] as isize);
    let (dh, dw) = (rw.dilations[0] as isize, rw.dilations[1] as isize);
    let (pt, pl) = (rw.pads_begin[0] as isize, rw.pads_begin[1] as isize);
    let cols = nr.min(oh * ow - pj * nr);
    // The panel's pixels as runs along output rows: (first column, length, input y and x of
    // the run's first window origin). A panel has at most `nr` <= 32 pixels, so at most 32
    // runs (one per pixel when the output is one pixel wide).
    debug_assert!(nr <= 32);
    let mut runs = [(0usize, 0usize, 0isize, 0isize); 32];
    let mut nruns = 0;
    let mut j = 0;
    while j < cols {
        let q = pj * nr + j;
        let (oy, ox) = (q / ow, q % ow);
        let len = (ow - ox).min(cols - j);
        runs[nruns] = (j, len, oy as isize * sh - pt, ox as isize * sw - pl);
        nruns += 1;
        j += len;
    }
    let runs = &runs[..nruns];
    // Padding taps and columns past the last pixel are skipped below and must read zero.
    panel[..channels * kh * kw * nr].fill(0.0);
    let mut p = 0;
    for ch in 0..channels {
        let plane = &x[ch * (ih * iw) as usize..(ch + 1) * (ih * iw) as usize];
        for ky in 0..kh as isize {
            for kx in 0..kw as isize {
                let dst = &mut panel[p * nr..p * nr + cols];
                for &(j0, len, y0, x0) in runs {
                    let y = y0 + ky * dh;
                    if y < 0 || y >= ih {
                        continue; // a padding row: zero
                    }
                    let row = &plane[(y * iw) as usize..((y + 1) * iw) as usize];
                    let x0 = x0 + kx * dw;
                    // Columns whose x = x0 + i * sw falls inside the row.
                    let lo = if x0 < 0 {
                        (-x0).div_euclid(sw) + ((-x0) % sw != 0) as isize
                    } else {
                        0
                    };
                    let hi = if x0 >= iw {
                        0
                    } else {
                        ((iw - 1 - x0) / sw + 1).min(len as isize)
                    };
                    if lo >= hi {
                        continue;
                    }
                    let (lo, hi) = (lo as usize, hi as usize);
                    let out = &mut dst[j0 + lo..j0 + hi];
                    let first = (x0 + lo as isize * sw) as usize;
                    if sw == 1 {
                        copy_run(out, &row[first..first + (hi - lo)]);
                    } else {
                        let step = sw as usize;
                        for (i, d) in out.iter_mut().enumerate() {
                            *d = row[first + i * step];
                        }
                    }
                }
                p += 1;
            }
        }
    }
}

/// dst = src. A panel-wide run (the common case) is a fixed-size copy the compiler inlines:
/// a memmove call per 64- or 128-byte row costs as much as the copy.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
        let d: &mut [f32; N] = dst.try_into().expect("run length");
        *d = src.try_into().expect("run length");
    }
    match dst.len() {
        32 => fixed::<32>(dst, src),
        16 => fixed::<16>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}
