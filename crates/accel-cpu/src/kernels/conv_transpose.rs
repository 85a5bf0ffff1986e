//! ConvTranspose as GEMM + col2im: cols[(oc, ky, kx), pixel] = W^T · X, then each column is
//! scattered into the output window it came from.
//!
//! The sub-pixel decomposition (each output phase a stride-1 implicit GEMM over the padded
//! input, no cols buffer) was built and measured against this on the U-Net's decoder: it lost
//! on every layer (up1-up3 1.29-1.57 ms against 1.02-1.28 ms, one thread, Zen 3), since a
//! phase's GEMM has only the layer's output channels as rows (16 to 64), so each B panel
//! serves few tiles, and narrow images pad the phase grid. Stride-2 layers with 3 or 4 taps
//! whose phases have enough tiles go through Winograd F(2x2, 2x2) per phase instead
//! (`conv_transpose_winograd`), which needs 9 multiply-adds where this needs 16.

use super::conv_transpose_winograd::PhaseWinograd;
use super::gemm::{Epilogue, ImplicitB, PackedA, gemm_implicit};
use super::{Images, check_out_len, float_input, image_dims, image_shape, new_output};
use crate::isa::{self, Isa};
use crate::scratch::Scratch;
use accel_core::ir::{ConvTranspose, Node};
use accel_core::ops::spatial_2d;
use accel_core::ops::{ResolvedWindow, resolve_conv_transpose};
use accel_core::{Error, Result, Tensor, TensorView};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Output planes up to this many pixels go through [`TapGather`].
const GATHER_MAX_PIXELS: usize = 256;

pub struct ConvTransposeKernel {
    attrs: ConvTranspose,
    in_channels: usize,
    out_channels_per_group: usize,
    kernel: Vec<usize>,
    /// Per group: W_g^T as [ocg * kh * kw, icg].
    packed: Vec<PackedA>,
    /// Stride-2 layers with 3 or 4 taps: the filters in the Winograd domain, used for
    /// inputs whose phases fill the GEMM panels ([`PhaseWinograd::fits`]).
    winograd: Option<PhaseWinograd>,
    bias: Vec<f32>,
    /// The gather map of the last small output plane run.
    gather: Mutex<Option<Arc<TapGather>>>,
    /// Where each input channel's row of X starts, for the last input size.
    x_rows: Mutex<Option<Arc<[usize]>>>,
}

impl ConvTransposeKernel {
    /// `in_hw`: the input's spatial size where the graph fixes it; a layer whose known input
    /// would never take the Winograd path does not hold its filters.
    pub fn new(
        node: &Node,
        attrs: &ConvTranspose,
        w: &Tensor,
        b: Option<&Tensor>,
        in_hw: Option<[usize; 2]>,
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
        let mut kernel = ConvTransposeKernel {
            attrs: attrs.clone(),
            in_channels: ic,
            out_channels_per_group: ocg,
            kernel,
            packed,
            bias,
            winograd: None,
            gather: Mutex::new(None),
            x_rows: Mutex::new(None),
        };
        if PhaseWinograd::eligible(ic, ocg, g, &kernel.kernel, &attrs.window) {
            let kernel_2d = [kernel.kernel[0], kernel.kernel[1]];
            let fits = match in_hw {
                Some([h, w]) => kernel
                    .geometry(node, &[1, ic, h, w])
                    .is_ok_and(|(_, rw, _)| PhaseWinograd::fits_kernel(kernel_2d, &rw)),
                None => true,
            };
            if fits {
                kernel.winograd = Some(PhaseWinograd::new(wv, ic, ocg, kernel_2d));
                // Where the graph fixes the input size, the GEMM weights are then never
                // read: only the transformed ones are kept (the U-Net's up1-up3: 1.7 MB).
                if in_hw.is_some() {
                    kernel.packed.clear();
                }
            }
        }
        Ok(kernel)
    }

    /// Holds the packed weights as f16 from now on.
    pub fn use_f16_weights(&mut self) {
        self.packed = self.packed.iter().map(PackedA::to_f16).collect();
        if let Some(w) = &mut self.winograd {
            w.use_f16();
        }
    }

    /// Bytes of weights this kernel holds.
    pub fn weight_bytes(&self) -> usize {
        self.packed.iter().map(PackedA::bytes).sum::<usize>()
            + self.winograd.as_ref().map_or(0, PhaseWinograd::bytes)
            + self.bias.len() * 4
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
        if let Some(w) = self.winograd.as_ref().filter(|w| w.fits(&rw)) {
            let act = self.attrs.activation;
            let (plane_in, plane_out) = (c * pixels, oc * oh * ow);
            for b in 0..n {
                let (xb, ob) = (
                    &xv[b * plane_in..][..plane_in],
                    &mut out[b * plane_out..][..plane_out],
                );
                w.run(xb, in_hw, &rw, &self.bias, act, ob);
            }
            return Ok(());
        }
        if self.packed.is_empty() {
            // Only where the graph's declared input size took the Winograd path; a run of
            // another size means the graph's shapes were not what they said.
            return Err(Error::node(
                node,
                format!(
                    "input {:?} is not the size the graph declares for this node, which it \
                     was compiled for: the model's shape information is wrong (re-export it, \
                     or leave these sizes symbolic)",
                    x.shape()
                ),
            ));
        }
        let isa = isa::active();
        // The same for every image and group.
        // (Its u32 offsets must reach every column value: not a limit any real layer meets.)
        let small = oh * ow <= GATHER_MAX_PIXELS && kh * kw * pixels <= u32::MAX as usize;
        let gather = small.then(|| self.tap_gather(&rw, in_hw));
        let planes = PhasePlanes::new(&rw, in_hw);
        // Every element of cols is written by the GEMM: no zeroing pass.
        let mut cols = Scratch::new();
        let cols = cols.reset_for_overwrite(ocg * kh * kw * pixels);
        let x_rows = self.x_rows(icg, pixels);
        for b in 0..n {
            for gi in 0..g {
                let xg = &xv[(b * c + gi * icg) * pixels..(b * c + (gi + 1) * icg) * pixels];
                // X as the GEMM's B, one row of all pixels per input channel: its column
                // panels are copied right before use (into a panel hot in L1), or read in
                // place where few tiles share each.
                let xb = ImplicitB::new(xg, &x_rows, 1, pixels, 0);
                gemm_implicit(&self.packed[gi], &xb, cols, pixels, Epilogue::NONE);
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
                let cols = &*cols;
                let block_job = |scratch: &mut Scratch, o: usize, y0: usize, block: &mut [f32]| {
                    let rows = Col2Im {
                        cols: &cols[o * kh * kw * pixels..(o + 1) * kh * kw * pixels],
                        y0,
                        bias: bias[o],
                        in_hw,
                        out_hw: [oh, ow],
                        rw: &rw,
                        planes: planes.as_ref(),
                        gather: gather.as_deref(),
                    };
                    rows.run(isa, block, scratch);
                    if let Some(a) = act {
                        super::activation::apply_slice(a, block);
                    }
                };
                // Whole channels per task where there are enough of them; otherwise the
                // few channels one after another, each split in row blocks.
                if rows_per_task == oh {
                    og.par_chunks_mut(oh * ow)
                        .enumerate()
                        .for_each_init(Scratch::new, |scratch, (o, plane)| {
                            block_job(scratch, o, 0, plane)
                        });
                } else {
                    for (o, plane) in og.chunks_mut(oh * ow).enumerate() {
                        plane
                            .par_chunks_mut(rows_per_task * ow)
                            .enumerate()
                            .for_each_init(Scratch::new, |scratch, (i, block)| {
                                block_job(scratch, o, i * rows_per_task, block)
                            });
                    }
                }
            }
        }
        Ok(())
    }

    /// Offsets c * pixels of X's channel rows, built once per input size.
    fn x_rows(&self, channels: usize, pixels: usize) -> Arc<[usize]> {
        let mut cached = self.x_rows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = cached
            .as_ref()
            .filter(|r| r.len() == channels && r.get(1).is_none_or(|&o| o == pixels))
        {
            return r.clone();
        }
        let rows: Arc<[usize]> = (0..channels).map(|c| c * pixels).collect();
        *cached = Some(rows.clone());
        rows
    }

    /// The gather map for `rw` on `in_hw`, built once per geometry.
    fn tap_gather(&self, rw: &ResolvedWindow, in_hw: [usize; 2]) -> Arc<TapGather> {
        let mut cached = self.gather.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = cached.as_ref().filter(|g| g.in_hw == in_hw && g.rw == *rw) {
            return g.clone();
        }
        let g = Arc::new(TapGather::new(rw, in_hw));
        *cached = Some(g.clone());
        g
    }
}

/// For small output planes (the U-Net's up0 and up1, 8x8 and 16x16), each output value's
/// contributions as offsets into its channel's columns: `offsets[starts[q]..starts[q + 1]]`
/// for output pixel q. Summing those is a few scalar loads per output, where the
/// run-per-tap paths spend more on setting up each of their short runs (col2im took as
/// long as the GEMM on up0).
struct TapGather {
    in_hw: [usize; 2],
    rw: ResolvedWindow,
    starts: Vec<u32>,
    offsets: Vec<u32>,
}

impl TapGather {
    fn new(rw: &ResolvedWindow, in_hw: [usize; 2]) -> TapGather {
        let [ih, iw] = in_hw;
        let (oh, ow) = (rw.output[0], rw.output[1]);
        let (kh, kw) = (rw.kernel[0], rw.kernel[1]);
        // (output pixel, cols offset) of every tap that lands inside the output.
        let mut hits = Vec::new();
        for ky in 0..kh {
            for kx in 0..kw {
                for iy in 0..ih {
                    let oy =
                        (iy * rw.strides[0] + ky * rw.dilations[0]).checked_sub(rw.pads_begin[0]);
                    let Some(oy) = oy.filter(|&y| y < oh) else {
                        continue;
                    };
                    for ix in 0..iw {
                        let ox = (ix * rw.strides[1] + kx * rw.dilations[1])
                            .checked_sub(rw.pads_begin[1]);
                        if let Some(ox) = ox.filter(|&x| x < ow) {
                            let at = ((ky * kw + kx) * ih + iy) * iw + ix;
                            hits.push((oy * ow + ox, at as u32));
                        }
                    }
                }
            }
        }
        hits.sort_unstable();
        let mut starts = vec![0u32; oh * ow + 1];
        for &(q, _) in &hits {
            starts[q + 1] += 1;
        }
        for q in 0..oh * ow {
            starts[q + 1] += starts[q];
        }
        TapGather {
            in_hw,
            rw: rw.clone(),
            starts,
            offsets: hits.into_iter().map(|(_, at)| at).collect(),
        }
    }

    /// out[j] = bias + the contributions to output pixel q0 + j, from one channel's `cols`.
    fn run(&self, cols: &[f32], bias: f32, q0: usize, out: &mut [f32]) {
        let starts = &self.starts[q0..q0 + out.len() + 1];
        for (o, s) in out.iter_mut().zip(starts.windows(2)) {
            let taps = &self.offsets[s[0] as usize..s[1] as usize];
            *o = taps.iter().fold(bias, |acc, &at| acc + cols[at as usize]);
        }
    }
}

/// Whole output rows y0.. of one channel from its columns: out[iy*sh - pt + ky*dh,
/// ix*sw - pl + kx*dw] = bias + the sum of cols[(ky, kx), (iy, ix)] landing there.
///
/// Strided layers go through [`PhasePlanes`] where they fit; otherwise each output row
/// gathers its taps, at stride sw > 1 into sw phase rows (output column q*sw + p at phase
/// p, position q), where each tap is one contiguous add, which are then interleaved into
/// the row: strided adds do not vectorize.
struct Col2Im<'a> {
    cols: &'a [f32],
    y0: usize,
    bias: f32,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    rw: &'a ResolvedWindow,
    planes: Option<&'a PhasePlanes>,
    gather: Option<&'a TapGather>,
}

/// Where the taps of a strided ConvTranspose land in the output's phase planes: plane
/// (py, px) holds output pixel (q*sh + py, r*sw + px) at row q, column r, with the input's
/// row length as its row stride. A tap then adds its whole input plane (all the rows it
/// reaches) as one contiguous run, whatever the image width; the few values a column shift
/// wraps into a neighbouring row are saved before the run and put back after it. Used
/// where every phase row fits in an input row (the usual ow = iw * sw).
struct PhasePlanes {
    /// Per ky: (py, sy), input row iy lands on row iy + sy of phase py.
    rows: Vec<(usize, isize)>,
    /// Per kx: (px, sx), input column ix lands on column ix + sx of phase px.
    cols: Vec<(usize, isize)>,
    /// The largest column shift: room before and after each plane for wrapped values.
    pad: usize,
}

impl PhasePlanes {
    fn new(rw: &ResolvedWindow, in_hw: [usize; 2]) -> Option<PhasePlanes> {
        let iw = in_hw[1];
        let (sh, sw) = (rw.strides[0], rw.strides[1]);
        // Phase 0 is the widest, with ceil(ow / sw) columns.
        if sh * sw == 1 || rw.output[1].div_ceil(sw) > iw {
            return None;
        }
        let split = |k: usize, dil: usize, pad: usize, s: usize| -> Vec<(usize, isize)> {
            (0..k)
                .map(|t| {
                    let off = (t * dil) as isize - pad as isize;
                    let s = s as isize;
                    (off.rem_euclid(s) as usize, off.div_euclid(s))
                })
                .collect()
        };
        let rows = split(rw.kernel[0], rw.dilations[0], rw.pads_begin[0], sh);
        let cols = split(rw.kernel[1], rw.dilations[1], rw.pads_begin[1], sw);
        let pad = cols.iter().map(|c| c.1.unsigned_abs()).max().unwrap_or(0);
        (pad < iw).then_some(PhasePlanes { rows, cols, pad })
    }
}

impl Col2Im<'_> {
    fn run(&self, isa: Isa, out: &mut [f32], scratch: &mut Scratch) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: both ISAs are only selected after runtime detection of avx2 and fma
            // (the AVX-512 one requires them too).
            Isa::Avx2Fma | Isa::Avx512 => unsafe { self.run_avx2(out, scratch) },
            _ => self.dispatch(out, scratch, false),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self, out: &mut [f32], scratch: &mut Scratch) {
        self.dispatch(out, scratch, true)
    }

    #[inline(always)]
    fn dispatch(&self, out: &mut [f32], scratch: &mut Scratch, avx2: bool) {
        match (self.gather, self.planes) {
            (Some(g), _) => g.run(self.cols, self.bias, self.y0 * self.out_hw[1], out),
            (None, Some(pp)) => self.by_planes(pp, out, scratch, avx2),
            (None, None) => self.rows(out, scratch, avx2),
        }
    }

    #[inline(always)]
    fn by_planes(&self, pp: &PhasePlanes, out: &mut [f32], scratch: &mut Scratch, avx2: bool) {
        let [ih, iw] = self.in_hw;
        let ow = self.out_hw[1];
        let (sh, sw) = (self.rw.strides[0], self.rw.strides[1]);
        let (kw, pad) = (self.rw.kernel[1], pp.pad);
        let (y0, y1) = (self.y0, self.y0 + out.len() / ow);
        // Phase py's rows q with q*sh + py in [y0, y1).
        let first_row = |y: usize, py: usize| if y <= py { 0 } else { (y - py).div_ceil(sh) };
        let plane_len = (y1 - y0).div_ceil(sh) * iw + 2 * pad;
        let buf = scratch.reset_for_overwrite(sh * sw * plane_len + ih * pad);
        let (planes, saved) = buf.split_at_mut(sh * sw * plane_len);
        planes.fill(self.bias);
        for (ky, &(py, sy)) in pp.rows.iter().enumerate() {
            let (q0, q1) = (first_row(y0, py) as isize, first_row(y1, py) as isize);
            // Input rows iy with q0 <= iy + sy < q1.
            let lo = (q0 - sy).max(0);
            let hi = (q1 - sy).min(ih as isize);
            if lo >= hi {
                continue;
            }
            let n = (hi - lo) as usize;
            for (kx, &(px, sx)) in pp.cols.iter().enumerate() {
                let src = &self.cols[((ky * kw + kx) * ih + lo as usize) * iw..][..n * iw];
                let plane = &mut planes[(py * sw + px) * plane_len..][..plane_len];
                // Both ends stay inside the plane: pad >= |sx| and the rows fit q1 - q0.
                let start = pad as isize + (lo + sy - q0) * iw as isize + sx;
                add_shifted_run(plane, start as usize, src, iw, sx, saved);
            }
        }
        for (r, orow) in out.chunks_exact_mut(ow).enumerate() {
            let y = y0 + r;
            let py = y % sh;
            let q = y / sh - first_row(y0, py);
            let phases = &planes[py * sw * plane_len + pad + q * iw..];
            interleave(phases, plane_len, sw, orow, avx2);
        }
    }

    #[inline(always)]
    fn rows(&self, out: &mut [f32], phases: &mut Scratch, avx2: bool) {
        let ow = self.out_hw[1];
        let sw = self.rw.strides[1];
        let per_phase = ow.div_ceil(sw);
        for (r, orow) in out.chunks_exact_mut(ow).enumerate() {
            let oy = self.y0 + r;
            if sw == 1 {
                orow.fill(self.bias);
                self.add_taps(oy, orow, per_phase);
            } else {
                let p = phases.reset_for_overwrite(sw * per_phase);
                p.fill(self.bias);
                self.add_taps(oy, p, per_phase);
                interleave(p, per_phase, sw, orow, avx2);
            }
        }
    }

    /// Adds every tap landing on output row `oy` into `acc`, laid out as sw phase rows of
    /// `per_phase` values (one plain row at sw == 1).
    #[inline(always)]
    fn add_taps(&self, oy: usize, acc: &mut [f32], per_phase: usize) {
        let [ih, iw] = self.in_hw;
        let ow = self.out_hw[1];
        let rw = self.rw;
        let (kh, kw) = (rw.kernel[0], rw.kernel[1]);
        let (sh, sw) = (rw.strides[0] as isize, rw.strides[1] as isize);
        let (dh, dw) = (rw.dilations[0] as isize, rw.dilations[1] as isize);
        let (pt, pl) = (rw.pads_begin[0] as isize, rw.pads_begin[1] as isize);
        for ky in 0..kh {
            // The input row that tap ky brings to this output row, if any.
            let num = oy as isize + pt - ky as isize * dh;
            if num < 0 || num % sh != 0 || num / sh >= ih as isize {
                continue;
            }
            let iy = (num / sh) as usize;
            for kx in 0..kw {
                let srow = &self.cols[((ky * kw + kx) * ih + iy) * iw..][..iw];
                // Input column ix lands on output column ix*sw + off = q*sw + phase.
                let off = kx as isize * dw - pl;
                let (phase, shift) = (off.rem_euclid(sw), off.div_euclid(sw));
                // Positions q of this phase inside the row: q*sw + phase < ow.
                let len = (ow as isize - phase).max(0);
                let q_end = (len + sw - 1) / sw;
                let lo = (-shift).max(0);
                let hi = (q_end - shift).min(iw as isize);
                if lo >= hi {
                    continue;
                }
                let dst = &mut acc[phase as usize * per_phase + (lo + shift) as usize..];
                dst.iter_mut()
                    .zip(&srow[lo as usize..hi as usize])
                    .for_each(|(o, &v)| *o += v);
            }
        }
    }
}

/// plane[start + r*iw + sx] += src[r*iw] for every row r of `src`, as one run: the |sx|
/// values per row that the shift carries across a row boundary (into columns no input
/// column of this tap reaches) are kept in `saved` and restored afterwards.
#[inline(always)]
fn add_shifted_run(
    plane: &mut [f32],
    start: usize,
    src: &[f32],
    iw: usize,
    sx: isize,
    saved: &mut [f32],
) {
    let rows = src.len() / iw;
    let s = sx.unsigned_abs();
    // Row r's wrapped values: the next row's first sx columns, or the previous row's last
    // |sx| columns (before `start` for row 0).
    let wrapped = |r: usize| {
        if sx > 0 {
            start + (r + 1) * iw - s
        } else {
            start + r * iw
        }
    };
    // Element loops, not copy_from_slice: |sx| is 1 or 2 and a memcpy call per row costs
    // more than the run.
    for r in 0..rows {
        for j in 0..s {
            saved[r * s + j] = plane[wrapped(r) + j];
        }
    }
    plane[start..start + src.len()]
        .iter_mut()
        .zip(src)
        .for_each(|(o, &v)| *o += v);
    for r in 0..rows {
        for j in 0..s {
            plane[wrapped(r) + j] = saved[r * s + j];
        }
    }
}

/// row[q*sw + p] = phases[p * phase_stride + q] for every column of `row`.
#[inline(always)]
fn interleave(phases: &[f32], phase_stride: usize, sw: usize, row: &mut [f32], avx2: bool) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx2 && sw == 2 {
        let (even, odd) = phases.split_at(phase_stride);
        for ((dst, e), o) in row
            .chunks_exact_mut(16)
            .zip(even.chunks_exact(8))
            .zip(odd.chunks_exact(8))
        {
            // SAFETY: reached only from `Col2Im::run_avx2` (avx2 is true only there), whose
            // features this inlined code has; each pointer covers the chunk it points to.
            unsafe {
                use std::arch::x86_64::*;
                let (e, o) = (_mm256_loadu_ps(e.as_ptr()), _mm256_loadu_ps(o.as_ptr()));
                // e0 o0 e1 o1 | e4 o4 e5 o5 and e2 o2 e3 o3 | e6 o6 e7 o7.
                let (lo, hi) = (_mm256_unpacklo_ps(e, o), _mm256_unpackhi_ps(e, o));
                _mm256_storeu_ps(dst.as_mut_ptr(), _mm256_permute2f128_ps::<0x20>(lo, hi));
                _mm256_storeu_ps(
                    dst.as_mut_ptr().add(8),
                    _mm256_permute2f128_ps::<0x31>(lo, hi),
                );
            }
            done += 16;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = avx2;
    for (x, v) in row.iter_mut().enumerate().skip(done) {
        *v = phases[(x % sw) * phase_stride + x / sw];
    }
}
