//! Direct convolution for layers with few input channels (an RGB stem such as the CRNN's
//! first conv): as a GEMM its K would be only c·kh·kw (27), so im2col copies as much as the
//! micro-kernel computes. Here the input is copied once into a zero-padded buffer and every
//! output row is computed 32 pixels (AVX-512; 16 with AVX2) by 4 output channels at a time,
//! the sums in eight zmm (ymm) registers.
//!
//! Strided stems (the U-Net's, stride 2) keep contiguous loads: each padded row is stored
//! as `sw` column-phase rows (columns p, p + sw, ...), so tap kx of output pixels x0.. reads
//! phase kx % sw from column x0 + kx / sw on. On the U-Net's stem this took 0.15 ms (im2col,
//! whose stride-2 gathers are scalar, + GEMM) to 0.10 ms on a Zen 2, 1 thread (ONNX Runtime
//! 0.08). The taps run as one flat loop over precomputed offsets: nested channel, row and
//! phase loops cost more than a 3x3 kernel's few FMAs per row (CRNN 4% faster whole).
//!
//! Hand-written for AVX-512F and AVX2+FMA: on the CRNN's stem (1 thread) the AVX-512 kernel
//! took 0.37 ms against 0.69 ms for im2col + GEMM on a Zen 5 with 16-pixel blocks; 32-pixel
//! blocks took it from 0.48 to 0.36 ms on a Xeon (ONNX Runtime 0.26).
//! The same loops in portable Rust lost to the GEMM path (0.92 against 0.73 ms with AVX2, 3.1
//! against 1.3 ms portable), so the portable path keeps the GEMM.

use super::activation::apply_slice;
#[cfg(target_arch = "x86_64")]
use super::pool::{nan_max256, nan_max512};
use crate::isa::{self, Isa};
use crate::scratch::Scratch;
use accel_core::ir::{Activation, Window};
use accel_core::ops::ResolvedWindow;
use rayon::prelude::*;

/// Output channels per register block.
const OB: usize = 4;
/// Output pixels per register block.
const PX: usize = 16;
/// Output pixels per AVX-512 block: two zmm per output channel, so eight independent FMA
/// chains (four left half of both FMA pipes idle, waiting on the latency).
const PX512: usize = 2 * PX;

/// Weights as [oc / OB][c][kh][kw][OB], output channels padded to a multiple of OB.
pub(crate) struct DirectConv {
    out_channels: usize,
    in_channels: usize,
    kernel: [usize; 2],
    weights: Vec<f32>,
}

impl DirectConv {
    /// The kernel for a conv with weights `w` [oc, c, kh, kw], when it serves it: AVX-512F or
    /// AVX2+FMA active, one group, 1 to 4 input channels, dilation 1, strides up to 4. (Zero
    /// input channels stay on the GEMM path, which handles K = 0.)
    pub(crate) fn for_conv(
        w: &[f32],
        oc: usize,
        c: usize,
        group: usize,
        kernel: [usize; 2],
        window: &Window,
    ) -> Option<DirectConv> {
        let ones = |v: &[usize]| v.iter().all(|&d| d == 1);
        let fits = matches!(isa::active(), Isa::Avx512 | Isa::Avx2Fma)
            && group == 1
            && (1..=4).contains(&c)
            && window.strides.iter().all(|&s| (1..=4).contains(&s))
            && ones(&window.dilations);
        fits.then(|| DirectConv::new(w, oc, c, kernel))
    }

    fn new(w: &[f32], oc: usize, c: usize, kernel: [usize; 2]) -> DirectConv {
        let [kh, kw] = kernel;
        let blocks = oc.div_ceil(OB);
        let mut weights = vec![0.0f32; blocks * c * kh * kw * OB];
        for o in 0..oc {
            for ci in 0..c {
                for t in 0..kh * kw {
                    weights[((o / OB) * c * kh * kw + ci * kh * kw + t) * OB + o % OB] =
                        w[(o * c + ci) * kh * kw + t];
                }
            }
        }
        DirectConv {
            out_channels: oc,
            in_channels: c,
            kernel,
            weights,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.weights.len() * 4
    }

    /// One image: x [c, ih, iw] -> out [oc, oh, ow], or with `pooled` the 2x2 max pool of
    /// that at stride 2, [oc, oh / 2, ow / 2].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &self,
        x: &[f32],
        in_hw: [usize; 2],
        rw: &ResolvedWindow,
        bias: &[f32],
        act: Option<Activation>,
        pooled: bool,
        out: &mut [f32],
    ) {
        let [kh, kw] = self.kernel;
        let (oh, ow) = (rw.output[0], rw.output[1]);
        let plane = if pooled { (oh / 2) * (ow / 2) } else { oh * ow };
        if plane == 0 {
            return;
        }
        let (pt, pl) = (rw.pads_begin[0], rw.pads_begin[1]);
        let [sh, sw] = [rw.strides[0], rw.strides[1]];
        // Padded so every block of outputs, the last one included, reads inside it: a phase
        // row holds the last block's pixels plus the (kw - 1) / sw columns its taps reach past.
        let ph = ((oh.max(1) - 1) * sh + kh).max(pt + in_hw[0]);
        let phase_w =
            (ow.div_ceil(PX512) * PX512 + (kw - 1) / sw).max((pl + in_hw[1]).div_ceil(sw));
        let isa = isa::active();
        let padded = pad_input(isa, x, self.in_channels, in_hw, [pt, pl], [ph, phase_w], sw);
        // Where each tap (ci, ky, kx) reads, from the block's first pixel: in the weights'
        // order, so the kernels run one flat loop over the taps.
        let tap_offsets: Vec<usize> = (0..self.in_channels)
            .flat_map(|ci| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (ci, ky, kx))))
            .map(|(ci, ky, kx)| ((ci * ph + ky) * sw + kx % sw) * phase_w + kx / sw)
            .collect();
        let job = Rows {
            padded: &padded,
            row_step: sh * sw * phase_w,
            reach: tap_offsets.iter().max().map_or(0, |&m| m + 1),
            tap_offsets: &tap_offsets,
            out_hw: [oh, ow],
            bias,
            act,
        };
        out[..self.out_channels * plane]
            .par_chunks_mut(OB * plane)
            .zip(self.weights.par_chunks(self.in_channels * kh * kw * OB))
            .enumerate()
            .for_each(|(b, (o, w))| match (isa, pooled) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Isa::Avx512 is only selected after runtime detection of avx512f.
                (Isa::Avx512, false) => unsafe { job.block_avx512(b, w, o) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                (Isa::Avx512, true) => unsafe { job.block_pooled_avx512(b, w, o) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Isa::Avx2Fma is only selected after runtime detection of avx2 and
                // fma.
                (Isa::Avx2Fma, false) => unsafe { job.block_avx2(b, w, o) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                (Isa::Avx2Fma, true) => unsafe { job.block_pooled_avx2(b, w, o) },
                _ => unreachable!(
                    "a DirectConv is only built for AVX-512F or AVX2 ({b}, {}, {})",
                    w.len(),
                    o.len()
                ),
            });
    }
}

/// x [c, ih, iw] copied into zero-bordered rows at padded position `at`, each padded row
/// of `ph` stored as `sw` column-phase rows of `phase_w` values (see the module docs).
/// Only the border is zeroed; a stride-2 row is split into its phases with shuffles.
fn pad_input(
    isa: Isa,
    x: &[f32],
    c: usize,
    in_hw: [usize; 2],
    at: [usize; 2],
    [ph, phase_w]: [usize; 2],
    sw: usize,
) -> Scratch {
    let [ih, iw] = in_hw;
    let mut p = Scratch::new();
    let row_len = sw * phase_w;
    let buf = p.reset_for_overwrite(c * ph * row_len);
    // Where phase `phase` of a row starts holding values, and how many.
    let span = |phase: usize| {
        let first = (phase + sw - at[1] % sw) % sw; // first i with (at + i) % sw == phase
        let count = if first < iw {
            (iw - first).div_ceil(sw)
        } else {
            0
        };
        ((at[1] + first) / sw, count)
    };
    for (ci, plane) in buf.chunks_exact_mut(ph * row_len).enumerate().take(c) {
        for (py, row) in plane.chunks_exact_mut(row_len).enumerate() {
            let Some(y) = py.checked_sub(at[0]).filter(|&y| y < ih) else {
                row.fill(0.0);
                continue;
            };
            let src = &x[(ci * ih + y) * iw..][..iw];
            for (phase, dst) in row.chunks_exact_mut(phase_w).enumerate() {
                let (col0, count) = span(phase);
                let end = (col0 + count).min(phase_w);
                dst[..col0.min(phase_w)].fill(0.0);
                dst[end..].fill(0.0);
            }
            match sw {
                1 => row[at[1]..at[1] + iw].copy_from_slice(src),
                2 => {
                    let (p0, p1) = row.split_at_mut(phase_w);
                    // Even source columns land in the left pad's phase.
                    let (even, odd) = if at[1].is_multiple_of(2) {
                        (&mut p0[at[1] / 2..], &mut p1[at[1] / 2..])
                    } else {
                        (&mut p1[at[1] / 2..], &mut p0[at[1] / 2 + 1..])
                    };
                    super::interleave::split_pairs(isa, src, even, odd);
                }
                _ => {
                    for (phase, dst) in row.chunks_exact_mut(phase_w).enumerate() {
                        let first = (phase + sw - at[1] % sw) % sw;
                        let (col0, _) = span(phase);
                        for (d, &v) in dst[col0..]
                            .iter_mut()
                            .zip(src.iter().skip(first).step_by(sw))
                        {
                            *d = v;
                        }
                    }
                }
            }
        }
    }
    p
}

struct Rows<'a> {
    /// [c][ph][sw][phase_w], see [`pad_input`].
    padded: &'a [f32],
    /// From one output row's inputs to the next's.
    row_step: usize,
    /// Offset of tap t's input for the first pixel of any block, [c][kh][kw].
    tap_offsets: &'a [usize],
    /// One past the largest tap offset.
    reach: usize,
    out_hw: [usize; 2],
    bias: &'a [f32],
    act: Option<Activation>,
}

impl Rows<'_> {
    /// The padded inputs of the block at output pixel (oy, x0) on: every tap's `px` pixels
    /// lie inside (asserted, so the tap loop reads without checks).
    #[inline(always)]
    fn block_inputs(&self, oy: usize, x0: usize, px: usize) -> &[f32] {
        let inputs = &self.padded[oy * self.row_step + x0..];
        assert!(self.reach + px - 1 <= inputs.len());
        inputs
    }

    /// Output channels b*OB.. (as many as `out` holds planes for) over the whole image.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn block_avx512(&self, b: usize, w: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let [oh, ow] = self.out_hw;
        let planes = out.len() / (oh * ow);
        let bias: [f32; OB] =
            std::array::from_fn(|q| self.bias.get(b * OB + q).copied().unwrap_or(0.0));
        // One block's weights: OB per tap.
        assert!(w.len() >= self.tap_offsets.len() * OB);
        for oy in 0..oh {
            for x0 in (0..ow).step_by(PX512) {
                let mut acc: [[__m512; 2]; OB] =
                    std::array::from_fn(|q| [_mm512_set1_ps(bias[q]); 2]);
                let inputs = self.block_inputs(oy, x0, PX512).as_ptr();
                for (&off, taps) in self.tap_offsets.iter().zip(w.chunks_exact(OB)) {
                    // SAFETY: 32 floats from every tap offset are inside the block's inputs
                    // (asserted in block_inputs).
                    let (v0, v1) = unsafe {
                        let row = inputs.add(off);
                        (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(PX)))
                    };
                    for (a, &tap) in acc.iter_mut().zip(taps) {
                        let t = _mm512_set1_ps(tap);
                        a[0] = _mm512_fmadd_ps(t, v0, a[0]);
                        a[1] = _mm512_fmadd_ps(t, v1, a[1]);
                    }
                }
                let n = PX512.min(ow - x0);
                // Lanes of each half that lie inside the row: a masked store for the last
                // block (copying it out of a stack array was a memmove call per block and
                // channel, a quarter of the CRNN stem's time).
                let mask = |half: usize| -> __mmask16 {
                    match n.saturating_sub(half * PX) {
                        0 => 0,
                        k if k >= PX => 0xffff,
                        k => (1u16 << k) - 1,
                    }
                };
                for (q, a) in acc.iter().enumerate().take(planes) {
                    let dst = &mut out[(q * oh + oy) * ow + x0..][..n];
                    for (half, &v) in a.iter().enumerate() {
                        let v = clamp512(self.act, v);
                        // SAFETY: dst holds n floats; the mask selects the lanes of this half
                        // below n, and a masked store touches no other lane.
                        unsafe {
                            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(half * PX), mask(half), v)
                        };
                    }
                }
            }
        }
        if let Some(a @ Activation::Sigmoid) = self.act {
            apply_slice(a, out);
        }
    }

    /// [`Rows::block_avx512`] with the 16 pixels in two ymm registers per output channel:
    /// eight accumulators, two row loads and four broadcasts per tap.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn block_avx2(&self, b: usize, w: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let [oh, ow] = self.out_hw;
        let planes = out.len() / (oh * ow);
        let bias: [f32; OB] =
            std::array::from_fn(|q| self.bias.get(b * OB + q).copied().unwrap_or(0.0));
        // One block's weights: OB per tap.
        assert!(w.len() >= self.tap_offsets.len() * OB);
        for oy in 0..oh {
            for x0 in (0..ow).step_by(PX) {
                let mut acc: [[__m256; 2]; OB] =
                    std::array::from_fn(|q| [_mm256_set1_ps(bias[q]); 2]);
                let inputs = self.block_inputs(oy, x0, PX).as_ptr();
                for (&off, taps) in self.tap_offsets.iter().zip(w.chunks_exact(OB)) {
                    // SAFETY: 16 floats from every tap offset are inside the block's inputs
                    // (asserted in block_inputs).
                    let (v0, v1) = unsafe {
                        let row = inputs.add(off);
                        (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)))
                    };
                    for (a, &tap) in acc.iter_mut().zip(taps) {
                        let t = _mm256_set1_ps(tap);
                        a[0] = _mm256_fmadd_ps(t, v0, a[0]);
                        a[1] = _mm256_fmadd_ps(t, v1, a[1]);
                    }
                }
                let n = PX.min(ow - x0);
                // The next block's output lines, for writing: the planes are too many
                // streams for the hardware prefetchers.
                let next = oy * ow + x0 + PX;
                if next + PX <= oh * ow {
                    for q in 0..planes {
                        for at in [next, next + PX - 1] {
                            // SAFETY: inside `out`; a prefetch reads nothing and never faults.
                            unsafe {
                                _mm_prefetch::<_MM_HINT_ET0>(
                                    out.as_ptr().add(q * oh * ow + at).cast::<i8>(),
                                )
                            };
                        }
                    }
                }
                for (q, a) in acc.iter().enumerate().take(planes) {
                    let fix = |a: __m256| clamp256(self.act, a);
                    let dst = &mut out[(q * oh + oy) * ow + x0..][..n];
                    if n == PX {
                        // SAFETY: dst holds PX = 16 floats: two stores of eight.
                        unsafe {
                            _mm256_storeu_ps(dst.as_mut_ptr(), fix(a[0]));
                            _mm256_storeu_ps(dst.as_mut_ptr().add(8), fix(a[1]));
                        }
                        continue;
                    }
                    let mut lane = [0.0f32; PX];
                    // SAFETY: lane holds PX = 16 floats: two stores of eight.
                    unsafe {
                        _mm256_storeu_ps(lane.as_mut_ptr(), fix(a[0]));
                        _mm256_storeu_ps(lane.as_mut_ptr().add(8), fix(a[1]));
                    }
                    dst.copy_from_slice(&lane[..n]);
                }
            }
        }
        if let Some(a @ Activation::Sigmoid) = self.act {
            apply_slice(a, out);
        }
    }

    /// [`Rows::block_avx512`] with the 2x2 max pool at stride 2 on the registers: output
    /// rows 2y and 2y + 1 of each 32-pixel block are computed together (16 accumulators),
    /// their maximum is taken, then that of each pair of columns, and 16 pooled values per
    /// channel are stored. The activation comes after the max (they commute: every fused
    /// activation is non-decreasing).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn block_pooled_avx512(&self, b: usize, w: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let [oh, ow] = self.out_hw;
        let (ph, pw) = (oh / 2, ow / 2);
        let planes = out.len() / (ph * pw);
        let bias: [f32; OB] =
            std::array::from_fn(|q| self.bias.get(b * OB + q).copied().unwrap_or(0.0));
        assert!(w.len() >= self.tap_offsets.len() * OB);
        // Lane i of the pair of registers (pixels 0-15, 16-31) at 2i and 2i + 1.
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        for py in 0..ph {
            for x0 in (0..2 * pw).step_by(PX512) {
                let mut acc: [[[__m512; 2]; 2]; OB] =
                    std::array::from_fn(|q| [[_mm512_set1_ps(bias[q]); 2]; 2]);
                let top = self.block_inputs(2 * py, x0, PX512).as_ptr();
                let bottom = self.block_inputs(2 * py + 1, x0, PX512).as_ptr();
                for (&off, taps) in self.tap_offsets.iter().zip(w.chunks_exact(OB)) {
                    // SAFETY: 32 floats from every tap offset are inside both rows' inputs
                    // (asserted in block_inputs).
                    let v = unsafe {
                        let (t, u) = (top.add(off), bottom.add(off));
                        [
                            [_mm512_loadu_ps(t), _mm512_loadu_ps(t.add(PX))],
                            [_mm512_loadu_ps(u), _mm512_loadu_ps(u.add(PX))],
                        ]
                    };
                    for (a, &tap) in acc.iter_mut().zip(taps) {
                        let t = _mm512_set1_ps(tap);
                        for (ar, vr) in a.iter_mut().zip(&v) {
                            ar[0] = _mm512_fmadd_ps(t, vr[0], ar[0]);
                            ar[1] = _mm512_fmadd_ps(t, vr[1], ar[1]);
                        }
                    }
                }
                // Pooled columns of this block that lie inside the output.
                let n = (PX512 / 2).min(pw - x0 / 2);
                let mask: __mmask16 = if n >= PX { 0xffff } else { (1u16 << n) - 1 };
                for (q, a) in acc.iter().enumerate().take(planes) {
                    let rows = [nan_max512(a[0][0], a[1][0]), nan_max512(a[0][1], a[1][1])];
                    let pairs = nan_max512(
                        _mm512_permutex2var_ps(rows[0], even, rows[1]),
                        _mm512_permutex2var_ps(rows[0], odd, rows[1]),
                    );
                    let v = clamp512(self.act, pairs);
                    let dst = &mut out[(q * ph + py) * pw + x0 / 2..][..n];
                    // SAFETY: dst holds n floats and the mask selects lanes below n.
                    unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, v) };
                }
            }
        }
        if let Some(a @ Activation::Sigmoid) = self.act {
            apply_slice(a, out);
        }
    }

    /// [`Rows::block_pooled_avx512`] with AVX2: 8-pixel blocks (two rows of four channels
    /// fill 8 of the 16 ymm registers), 4 pooled values per channel.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn block_pooled_avx2(&self, b: usize, w: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        const PX8: usize = 8;
        let [oh, ow] = self.out_hw;
        let (ph, pw) = (oh / 2, ow / 2);
        let planes = out.len() / (ph * pw);
        let bias: [f32; OB] =
            std::array::from_fn(|q| self.bias.get(b * OB + q).copied().unwrap_or(0.0));
        assert!(w.len() >= self.tap_offsets.len() * OB);
        for py in 0..ph {
            for x0 in (0..2 * pw).step_by(PX8) {
                let mut acc: [[__m256; 2]; OB] = std::array::from_fn(|q| {
                    let b = _mm256_set1_ps(bias[q]);
                    [b, b]
                });
                let top = self.block_inputs(2 * py, x0, PX8).as_ptr();
                let bottom = self.block_inputs(2 * py + 1, x0, PX8).as_ptr();
                for (&off, taps) in self.tap_offsets.iter().zip(w.chunks_exact(OB)) {
                    // SAFETY: 8 floats from every tap offset are inside both rows' inputs
                    // (asserted in block_inputs).
                    let (t, u) = unsafe {
                        (
                            _mm256_loadu_ps(top.add(off)),
                            _mm256_loadu_ps(bottom.add(off)),
                        )
                    };
                    for (a, &tap) in acc.iter_mut().zip(taps) {
                        let k = _mm256_set1_ps(tap);
                        a[0] = _mm256_fmadd_ps(k, t, a[0]);
                        a[1] = _mm256_fmadd_ps(k, u, a[1]);
                    }
                }
                let n = (PX8 / 2).min(pw - x0 / 2);
                for (q, a) in acc.iter().enumerate().take(planes) {
                    let rows = nan_max256(a[0], a[1]);
                    // Columns 0 2 0 2 | 4 6 4 6 and 1 3 1 3 | 5 7 5 7; their max has the
                    // four pooled values in lanes 0, 1, 4 and 5.
                    let pairs = nan_max256(
                        _mm256_shuffle_ps::<0b10_00_10_00>(rows, rows),
                        _mm256_shuffle_ps::<0b11_01_11_01>(rows, rows),
                    );
                    let pairs = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                        _mm256_castps_pd(pairs),
                    ));
                    let v = clamp256(self.act, pairs);
                    let mut lanes = [0.0f32; PX8];
                    // SAFETY: lanes holds 8 floats.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
                    let dst = &mut out[(q * ph + py) * pw + x0 / 2..][..n];
                    for (d, &l) in dst.iter_mut().zip(&lanes) {
                        *d = l;
                    }
                }
            }
        }
        if let Some(a @ Activation::Sigmoid) = self.act {
            apply_slice(a, out);
        }
    }
}

/// ReLU or Clip on a register (Sigmoid is applied to the stored output afterwards): max/min
/// return their second operand when one is NaN, so the value goes second and NaN stays NaN.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn clamp512(act: Option<Activation>, v: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    match act {
        Some(Activation::Relu) => _mm512_max_ps(_mm512_setzero_ps(), v),
        Some(Activation::Clip { min, max }) => {
            _mm512_min_ps(_mm512_set1_ps(max), _mm512_max_ps(_mm512_set1_ps(min), v))
        }
        _ => v,
    }
}

/// [`clamp512`] for AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
fn clamp256(act: Option<Activation>, v: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    match act {
        Some(Activation::Relu) => _mm256_max_ps(_mm256_setzero_ps(), v),
        Some(Activation::Clip { min, max }) => {
            _mm256_min_ps(_mm256_set1_ps(max), _mm256_max_ps(_mm256_set1_ps(min), v))
        }
        _ => v,
    }
}
