//! Depthwise convolution: one filter per channel, channels spread over the thread pool.
//!
//! The 3x3 stride-1 and stride-2 filters of MobileNet read a zero-bordered copy of their
//! channel whose rows are split into stride phases ([`PhaseRows`]), so that every tap of a
//! block of neighbouring outputs is one contiguous load. On AVX2 a block is 8 outputs in a
//! register, and four blocks (from one row or several, for narrow planes) are computed at
//! once so that the FMA chains hide each other's latency. Other windows take a row loop.

use super::activation::{self, clip, relu, sigmoid_fast};
use crate::isa::{self, Isa};
use crate::scratch::Scratch;
use accel_core::ir::Activation;
use accel_core::ops::ResolvedWindow;
use rayon::prelude::*;

/// out[c] = act(bias[c] + sum_k w[c,k] * x[c, window]) (+ residual[c]) for every channel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    out: &mut [f32],
    channels: usize,
    in_hw: [usize; 2],
    rw: &ResolvedWindow,
    act: Option<Activation>,
    residual: Option<&[f32]>,
) {
    let (oh, ow) = (rw.output[0], rw.output[1]);
    let plane_in = in_hw[0] * in_hw[1];
    let isa = isa::active();
    let phase_rows = PhaseRows::for_window(rw);
    // One padded buffer per worker. Its border stays zero across channels: every channel
    // writes the same interior positions.
    let init = || {
        let mut buf = Scratch::new();
        if let Some(p) = &phase_rows {
            buf.reset_zeroed(p.len());
        }
        buf
    };
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .take(channels)
        .for_each_init(init, |buf, (c, o)| {
            let plane = &x[c * plane_in..(c + 1) * plane_in];
            match &phase_rows {
                Some(p) => {
                    let wc: &[f32; 9] = w[c * 9..c * 9 + 9].try_into().expect("9 taps");
                    let data = &mut buf.reset_for_overwrite(p.len())[..];
                    p.fill(isa, data, plane, in_hw);
                    filter_3x3(isa, p, data, wc, bias[c], act, o);
                }
                None => {
                    let (kh, kw) = (rw.kernel[0], rw.kernel[1]);
                    general(
                        plane,
                        &w[c * kh * kw..(c + 1) * kh * kw],
                        bias[c],
                        in_hw,
                        rw,
                        o,
                    );
                    if let Some(a) = act {
                        activation::apply_slice(a, o);
                    }
                }
            }
            if let Some(r) = residual {
                let r = &r[c * oh * ow..(c + 1) * oh * ow];
                o.iter_mut().zip(r).for_each(|(v, &a)| *v += a);
            }
        });
}

/// Outputs per block of the portable kernel; the padded rows leave room for a whole block
/// past the last output (the AVX2 kernel's blocks of 8 fit in that too).
const BLOCK: usize = 16;

/// A channel's zero-bordered copy for a 3x3 window at stride `stride`: `height` rows of
/// `stride` phase segments, segment `p` holding the padded columns p, p + stride, ...
/// Output (oy, ox)'s tap (ky, kx) then sits at
/// `(oy * stride + ky) * row + (kx % stride) * seg + ox + kx / stride`.
struct PhaseRows {
    stride: usize,
    /// Values per phase segment: every output column plus a block's overhang and the taps.
    seg: usize,
    /// Values per padded row (`stride * seg`).
    row: usize,
    height: usize,
    pads: [usize; 2],
    out_hw: [usize; 2],
}

impl PhaseRows {
    /// The layout for a 3x3 stride-1 or stride-2 undilated window, `None` for any other.
    fn for_window(rw: &ResolvedWindow) -> Option<PhaseRows> {
        let s = rw.strides[0];
        let fits = rw.kernel == [3, 3]
            && rw.dilations == [1, 1]
            && rw.strides[1] == s
            && (s == 1 || s == 2)
            && rw.output[0] > 0
            && rw.output[1] > 0;
        if !fits {
            return None;
        }
        let (oh, ow) = (rw.output[0], rw.output[1]);
        let seg = ow.div_ceil(BLOCK) * BLOCK + 2;
        let height = (oh - 1) * s + 3;
        Some(PhaseRows {
            stride: s,
            seg,
            row: s * seg,
            height,
            pads: [rw.pads_begin[0], rw.pads_begin[1]],
            out_hw: [oh, ow],
        })
    }

    fn len(&self) -> usize {
        self.height * self.row
    }

    /// Copies the input values the window reads into their padded positions (the same
    /// positions for every channel, so the zeros around them stay).
    fn fill(&self, isa: Isa, data: &mut [f32], plane: &[f32], [ih, iw]: [usize; 2]) {
        let [pt, pl] = self.pads;
        // Padded columns past `stride * seg` are never read.
        let cols = iw.min(self.row.saturating_sub(pl));
        for py in pt..(pt + ih).min(self.height) {
            let src = &plane[(py - pt) * iw..][..cols];
            let dst = &mut data[py * self.row..][..self.row];
            if self.stride == 1 {
                dst[pl..pl + cols].copy_from_slice(src);
                continue;
            }
            let (even, odd) = dst.split_at_mut(self.seg);
            // An odd first column goes to the odd phase; the rest pair up from an even one.
            let (src, x) = match src.split_first() {
                Some((&v, rest)) if pl % 2 == 1 => {
                    odd[pl / 2] = v;
                    (rest, pl + 1)
                }
                _ => (src, pl),
            };
            let (even, odd) = (&mut even[x / 2..], &mut odd[x / 2..]);
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: both ISAs are only selected after runtime detection of avx2.
                Isa::Avx2Fma | Isa::Avx512 => unsafe { avx2::deinterleave(src, even, odd) },
                _ => deinterleave(src, even, odd),
            }
        }
    }

    /// Offset of tap (ky, kx) from its output's base position.
    fn tap(&self, ky: usize, kx: usize) -> usize {
        ky * self.row + (kx % self.stride) * self.seg + kx / self.stride
    }
}

/// The 3x3 filter over one padded channel, `act` applied on the way out.
fn filter_3x3(
    isa: Isa,
    p: &PhaseRows,
    data: &[f32],
    w: &[f32; 9],
    bias: f32,
    act: Option<Activation>,
    out: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx512 => {
            let clamp = match act {
                None | Some(Activation::Sigmoid) => None,
                Some(Activation::Relu) => Some((0.0, f32::INFINITY)),
                Some(Activation::Clip { min, max }) => Some((min, max)),
            };
            // SAFETY: both ISAs are only selected after runtime detection of avx2 and fma
            // (the AVX-512 one requires them too).
            unsafe { avx2::filter_3x3(p, data, w, bias, clamp, out) };
            if act == Some(Activation::Sigmoid) {
                activation::apply_slice(Activation::Sigmoid, out);
            }
        }
        _ => filter_3x3_portable(p, data, w, bias, act, out),
    }
}

/// Portable code the compiler vectorizes: 16 outputs of one row per block.
fn filter_3x3_portable(
    p: &PhaseRows,
    data: &[f32],
    w: &[f32; 9],
    bias: f32,
    act: Option<Activation>,
    out: &mut [f32],
) {
    match act {
        None => portable_rows(p, data, w, bias, out, |v| v),
        Some(Activation::Relu) => portable_rows(p, data, w, bias, out, relu),
        Some(Activation::Clip { min, max }) => {
            portable_rows(p, data, w, bias, out, |v| clip(v, min, max))
        }
        Some(Activation::Sigmoid) => portable_rows(p, data, w, bias, out, sigmoid_fast),
    }
}

#[inline(always)]
fn portable_rows(
    p: &PhaseRows,
    data: &[f32],
    w: &[f32; 9],
    bias: f32,
    out: &mut [f32],
    act: impl Fn(f32) -> f32,
) {
    let [oh, ow] = p.out_hw;
    let taps: [usize; 9] = std::array::from_fn(|t| p.tap(t / 3, t % 3));
    for (oy, orow) in out.chunks_exact_mut(ow).take(oh).enumerate() {
        let base = oy * p.stride * p.row;
        for x0 in (0..ow).step_by(BLOCK) {
            let mut acc = [bias; BLOCK];
            for (&wt, &tap) in w.iter().zip(&taps) {
                let r = &data[base + tap + x0..][..BLOCK];
                acc.iter_mut().zip(r).for_each(|(a, &v)| *a += wt * v);
            }
            let n = BLOCK.min(ow - x0);
            orow[x0..x0 + n]
                .iter_mut()
                .zip(&acc)
                .for_each(|(o, &a)| *o = act(a));
        }
    }
}

/// even[i] = src[2i], odd[i] = src[2i + 1] (a last unpaired value goes to `even`).
#[inline(always)]
fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let pairs = src.chunks_exact(2);
    if let &[last] = pairs.remainder() {
        even[src.len() / 2] = last;
    }
    for ((pair, e), o) in pairs.zip(even.iter_mut()).zip(odd.iter_mut()) {
        (*e, *o) = (pair[0], pair[1]);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::PhaseRows;
    use std::arch::x86_64::*;

    /// [`super::deinterleave`], 16 values per step: two loads, two shuffles picking the
    /// even and odd lanes of each 128-bit half, two permutes putting the halves in order.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        let steps = (src.len() / 16).min(even.len() / 8).min(odd.len() / 8);
        for j in 0..steps {
            let s: &[f32; 16] = src[16 * j..16 * j + 16].try_into().expect("16 values");
            let e: &mut [f32; 8] = (&mut even[8 * j..8 * j + 8]).try_into().expect("8 values");
            let o: &mut [f32; 8] = (&mut odd[8 * j..8 * j + 8]).try_into().expect("8 values");
            // SAFETY: the arrays above bound every load and store; AVX2 is the caller's.
            unsafe {
                let a = _mm256_loadu_ps(s.as_ptr());
                let b = _mm256_loadu_ps(s.as_ptr().add(8));
                // Lanes a0 a2 b0 b2 | a4 a6 b4 b6, then reordered as 64-bit pairs.
                let ev = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                let od = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                const ORDER: i32 = 0b11_01_10_00;
                let ev = _mm256_castpd_ps(_mm256_permute4x64_pd::<ORDER>(_mm256_castps_pd(ev)));
                let od = _mm256_castpd_ps(_mm256_permute4x64_pd::<ORDER>(_mm256_castps_pd(od)));
                _mm256_storeu_ps(e.as_mut_ptr(), ev);
                _mm256_storeu_ps(o.as_mut_ptr(), od);
            }
        }
        let done = 16 * steps;
        super::deinterleave(&src[done..], &mut even[done / 2..], &mut odd[done / 2..]);
    }

    /// Blocks computed together: four FMA chains cover most of the FMA latency.
    const UNITS: usize = 4;

    /// The 3x3 filter, 8 outputs per block. Blocks run in row-major order, and each store
    /// is a whole register: a block short of 8 outputs (the end of a narrow row) spills
    /// into the next row, which a later block overwrites. Only the channel's last blocks,
    /// whose spill would leave the plane, go through a stack copy.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn filter_3x3(
        p: &PhaseRows,
        data: &[f32],
        w: &[f32; 9],
        bias: f32,
        clamp: Option<(f32, f32)>,
        out: &mut [f32],
    ) {
        let [oh, ow] = p.out_hw;
        let len = oh * ow;
        // The loads below rely on these; see `block`.
        assert!(data.len() >= p.len() && out.len() >= len && p.seg >= ow.div_ceil(8) * 8 + 2);
        let blocks_per_row = ow.div_ceil(8);
        let units = oh * blocks_per_row;
        let mut wv = [_mm256_setzero_ps(); 9];
        let mut taps = [0usize; 9];
        for t in 0..9 {
            wv[t] = _mm256_set1_ps(w[t]);
            taps[t] = p.tap(t / 3, t % 3);
        }
        let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let k = Kernel {
            src: data.as_ptr(),
            wv,
            taps,
            bias: _mm256_set1_ps(bias),
            lo: _mm256_set1_ps(lo),
            hi: _mm256_set1_ps(hi),
        };
        // (input base, output offset) of unit u.
        let unit = |u: usize| {
            let (oy, x0) = (u / blocks_per_row, (u % blocks_per_row) * 8);
            (oy * p.stride * p.row + x0, oy * ow + x0)
        };
        let mut u = 0;
        while u + UNITS <= units {
            let at = [unit(u), unit(u + 1), unit(u + 2), unit(u + 3)];
            let bases = [at[0].0, at[1].0, at[2].0, at[3].0];
            // SAFETY: every unit is below `units`.
            let v = unsafe { k.block(bases) };
            for (&(_, o), v) in at.iter().zip(v) {
                // SAFETY: this function's AVX.
                unsafe { store(out, len, o, v) };
            }
            u += UNITS;
        }
        for u in u..units {
            let (base, o) = unit(u);
            // SAFETY: u is below `units`.
            let [v] = unsafe { k.block([base]) };
            // SAFETY: this function's AVX.
            unsafe { store(out, len, o, v) };
        }
    }

    struct Kernel {
        src: *const f32,
        wv: [__m256; 9],
        taps: [usize; 9],
        bias: __m256,
        lo: __m256,
        hi: __m256,
    }

    impl Kernel {
        /// N blocks of 8 outputs from their input bases, clamped.
        ///
        /// # Safety
        /// AVX2 and FMA are available (this is reached only from `filter_3x3`, whose
        /// features it inherits by being inlined). Each base is that of a block of the plane: then base + tap + 7 < p.len(), as
        /// the last row read is (oh - 1) * stride + 2 < height, and within a row the last
        /// value read is below (phase + 1) * seg, seg being at least round_up(ow, 8) + 2.
        #[inline(always)]
        unsafe fn block<const N: usize>(&self, base: [usize; N]) -> [__m256; N] {
            let mut acc = [self.bias; N];
            for t in 0..9 {
                for k in 0..N {
                    // SAFETY: the reads are in bounds (see above), the caller's FMA.
                    unsafe {
                        let v = _mm256_loadu_ps(self.src.add(base[k] + self.taps[t]));
                        acc[k] = _mm256_fmadd_ps(v, self.wv[t], acc[k]);
                    }
                }
            }
            for a in &mut acc {
                // max(lo, v) and min(hi, v) return v when it is NaN.
                // SAFETY: the caller's AVX.
                *a = unsafe { _mm256_min_ps(self.hi, _mm256_max_ps(self.lo, *a)) };
            }
            acc
        }
    }

    /// Stores 8 outputs at `o`, or those of them below `len` at the plane's end.
    ///
    /// # Safety
    /// AVX is available.
    #[inline(always)]
    unsafe fn store(out: &mut [f32], len: usize, o: usize, v: __m256) {
        if o + 8 <= len {
            let dst: &mut [f32; 8] = (&mut out[o..o + 8]).try_into().expect("8 outputs");
            // SAFETY: `dst` holds 8 values.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
        } else {
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` holds 8 values.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            out[o..len].copy_from_slice(&lanes[..len - o]);
        }
    }
}

/// Any window, stride and dilation: the row loop, taps clipped to the input.
fn general(
    plane: &[f32],
    wc: &[f32],
    bias: f32,
    [ih, iw]: [usize; 2],
    rw: &ResolvedWindow,
    o: &mut [f32],
) {
    let (kh, kw) = (rw.kernel[0], rw.kernel[1]);
    let (oh, ow) = (rw.output[0], rw.output[1]);
    let (sh, sw) = (rw.strides[0], rw.strides[1]);
    let (dh, dw) = (rw.dilations[0], rw.dilations[1]);
    let (pt, pl) = (rw.pads_begin[0] as isize, rw.pads_begin[1] as isize);
    o.fill(bias);
    for oy in 0..oh {
        let orow = &mut o[oy * ow..(oy + 1) * ow];
        for ky in 0..kh {
            let y = (oy * sh) as isize - pt + (ky * dh) as isize;
            if y < 0 || y >= ih as isize {
                continue;
            }
            let irow = &plane[y as usize * iw..(y as usize + 1) * iw];
            for kx in 0..kw {
                let wt = wc[ky * kw + kx];
                let off = (kx * dw) as isize - pl;
                // Valid ox: 0 <= ox*sw + off < iw.
                // Padding wider than the output leaves no valid ox at all.
                let lo = if off < 0 {
                    ((-off) as usize).div_ceil(sw).min(ow)
                } else {
                    0
                };
                let hi = if (iw as isize) > off {
                    (((iw as isize - off) as usize).div_ceil(sw)).min(ow)
                } else {
                    0
                };
                if lo >= hi {
                    continue;
                }
                if sw == 1 {
                    let start = (lo as isize + off) as usize;
                    for (ov, &iv) in orow[lo..hi].iter_mut().zip(&irow[start..]) {
                        *ov += wt * iv;
                    }
                } else {
                    for ox in lo..hi {
                        orow[ox] += wt * irow[(ox as isize * sw as isize + off) as usize];
                    }
                }
            }
        }
    }
}
