//! Depthwise convolution: one filter per channel, channels spread over the thread pool.
//!
//! The 3x3 stride-1 and stride-2 filters of MobileNet read a zero-bordered copy of their
//! channel whose rows are split into stride phases ([`PhaseRows`]), so that every tap of a
//! block of neighbouring outputs is one contiguous load. On AVX2 a block is 8 outputs in a
//! register, and four blocks (from one row or several, for narrow planes) are computed at
//! once so that the FMA chains hide each other's latency. Small planes and other windows
//! take the channels-in-lanes layout on AVX2 ([`Lanes`]), and the row loop elsewhere.

use super::activation::{self, clip, relu, sigmoid_fast};
use super::interleave::split_pairs;
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
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2Fma | Isa::Avx512)
        && (phase_rows.is_none() || oh * ow <= LANES_MAX_PIXELS)
        && let Some(lanes) = Lanes::for_window(rw, in_hw)
    {
        return depthwise_lanes(&lanes, x, w, bias, out, channels, act, residual);
    }
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

/// [`depthwise`] through the channels-in-lanes layout, 8 channels per task.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn depthwise_lanes(
    lanes: &Lanes,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    out: &mut [f32],
    channels: usize,
    act: Option<Activation>,
    residual: Option<&[f32]>,
) {
    let plane_in = lanes.in_hw[0] * lanes.in_hw[1];
    let len = lanes.out_hw[0] * lanes.out_hw[1];
    let (x, out) = (&x[..channels * plane_in], &mut out[..channels * len]);
    // One layout per worker. Its border stays zero across groups: every group writes the
    // same interior positions.
    let init = || {
        let mut buf = Scratch::new();
        buf.reset_zeroed(lanes.len());
        buf
    };
    out.par_chunks_mut(8 * len)
        .enumerate()
        .for_each_init(init, |buf, (g, o)| {
            let (c0, valid) = (g * 8, o.len() / len);
            let taps = lanes.ntaps;
            // Weights tap-major, one lane per channel; absent channels stay zero.
            let mut wg = [[0.0f32; 8]; MAX_TAPS];
            let mut bg = [0.0f32; 8];
            for l in 0..valid {
                for (t, wt) in wg.iter_mut().take(taps).enumerate() {
                    wt[l] = w[(c0 + l) * taps + t];
                }
                bg[l] = bias[c0 + l];
            }
            let data = &mut buf.reset_for_overwrite(lanes.len())[..];
            let planes = &x[c0 * plane_in..(c0 + valid) * plane_in];
            let res = residual.map(|r| &r[c0 * len..(c0 + valid) * len]);
            // The residual follows the activation, so a sigmoid (applied below) takes it
            // after.
            let sigmoid = act == Some(Activation::Sigmoid);
            let (clamp, fused_res) = (register_clamp(act), res.filter(|_| !sigmoid));
            // SAFETY: both ISAs are only selected after runtime detection of avx2 and fma
            // (the AVX-512 one requires them too).
            unsafe {
                avx2::fill_lanes(lanes, planes, valid, data);
                avx2::filter_lanes(lanes, data, &wg, &bg, clamp, o, fused_res);
            }
            if sigmoid {
                activation::apply_slice(Activation::Sigmoid, o);
                if let Some(r) = res {
                    o.iter_mut().zip(r).for_each(|(v, &a)| *v += a);
                }
            }
        });
}

/// The (min, max) the AVX2 kernels clamp their registers to for `act`; a sigmoid is
/// applied to the stored outputs instead.
#[cfg(target_arch = "x86_64")]
fn register_clamp(act: Option<Activation>) -> Option<(f32, f32)> {
    match act {
        None | Some(Activation::Sigmoid) => None,
        Some(Activation::Relu) => Some((0.0, f32::INFINITY)),
        Some(Activation::Clip { min, max }) => Some((min, max)),
    }
}

/// Largest output plane that 3x3 windows take through [`Lanes`] on AVX2. Up to 16x16 the
/// lanes measured as fast as the phase rows or faster, 2x on MobileNet's 4x4 planes, where
/// a row fills half a register; on 32x32 and 64x64 planes 15-30% slower (8 planes 4 KB or
/// more apart are read and written at once).
#[cfg(target_arch = "x86_64")]
const LANES_MAX_PIXELS: usize = 256;

/// Most taps a window may have for the channels-in-lanes kernel (5x5; MobileNet's are 3x3).
#[cfg(target_arch = "x86_64")]
const MAX_TAPS: usize = 25;

/// A zero-bordered copy of 8 channels side by side: padded pixel (py, px) holds the 8
/// channels' values at `(py * width + px) * 8`. One register then covers one pixel of 8
/// channels, whatever the stride or plane size: a 4x4 plane fills its registers as well as
/// a 64x64 one, where a row of 4 outputs would leave half of an 8-wide register idle.
#[cfg(target_arch = "x86_64")]
struct Lanes {
    /// Padded plane, in pixels: every input pixel and every position a window reads.
    width: usize,
    height: usize,
    pads: [usize; 2],
    strides: [usize; 2],
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    /// Offset of each tap from its output's base position, in values.
    taps: [usize; MAX_TAPS],
    ntaps: usize,
}

#[cfg(target_arch = "x86_64")]
impl Lanes {
    /// The layout for `rw` over a plane of `in_hw`; `None` for windows with more than
    /// [`MAX_TAPS`] taps or an empty output.
    fn for_window(rw: &ResolvedWindow, in_hw: [usize; 2]) -> Option<Lanes> {
        let (k, s, d) = (&rw.kernel, &rw.strides, &rw.dilations);
        let ntaps = k[0] * k[1];
        if ntaps == 0 || ntaps > MAX_TAPS || rw.output[0] == 0 || rw.output[1] == 0 {
            return None;
        }
        let (oh, ow) = (rw.output[0], rw.output[1]);
        let (pt, pl) = (rw.pads_begin[0], rw.pads_begin[1]);
        let width = (pl + in_hw[1]).max((ow - 1) * s[1] + (k[1] - 1) * d[1] + 1);
        let height = (pt + in_hw[0]).max((oh - 1) * s[0] + (k[0] - 1) * d[0] + 1);
        let mut taps = [0; MAX_TAPS];
        for (t, tap) in taps.iter_mut().take(ntaps).enumerate() {
            let (ky, kx) = (t / k[1], t % k[1]);
            *tap = (ky * d[0] * width + kx * d[1]) * 8;
        }
        Some(Lanes {
            width,
            height,
            pads: [pt, pl],
            strides: [s[0], s[1]],
            in_hw,
            out_hw: [oh, ow],
            taps,
            ntaps,
        })
    }

    fn len(&self) -> usize {
        self.height * self.width * 8
    }
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
            split_pairs(isa, src, &mut even[x / 2..], &mut odd[x / 2..]);
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
            let clamp = register_clamp(act);
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Lanes, MAX_TAPS, PhaseRows};
    use std::arch::x86_64::*;

    /// out[j] lane i = r[i] lane j.
    ///
    /// # Safety
    /// AVX is available.
    #[inline(always)]
    unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        // SAFETY: the caller's AVX.
        unsafe {
            // Per 128-bit half: t0 = r0[0] r1[0] r0[1] r1[1], t1 = r0[2] r1[2] r0[3] r1[3].
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            // u_j: lane j of rows 0-3 in the low half, lane j + 4 in the high half.
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            // v_j: the same for rows 4-7.
            let v0 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let v1 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let v2 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let v3 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            [
                _mm256_permute2f128_ps::<0x20>(u0, v0),
                _mm256_permute2f128_ps::<0x20>(u1, v1),
                _mm256_permute2f128_ps::<0x20>(u2, v2),
                _mm256_permute2f128_ps::<0x20>(u3, v3),
                _mm256_permute2f128_ps::<0x31>(u0, v0),
                _mm256_permute2f128_ps::<0x31>(u1, v1),
                _mm256_permute2f128_ps::<0x31>(u2, v2),
                _mm256_permute2f128_ps::<0x31>(u3, v3),
            ]
        }
    }

    /// The first `src.len()` (at most 8) lanes from `src`, the rest zero.
    ///
    /// # Safety
    /// AVX is available.
    #[inline(always)]
    unsafe fn load_n(src: &[f32]) -> __m256 {
        let mut lanes = [0.0f32; 8];
        let v: &[f32] = if let Ok(whole) = <&[f32; 8]>::try_from(src) {
            whole
        } else {
            lanes[..src.len()].copy_from_slice(src);
            &lanes
        };
        // SAFETY: `v` holds 8 values; the caller's AVX.
        unsafe { _mm256_loadu_ps(v.as_ptr()) }
    }

    /// Stores the first `dst.len()` (at most 8) lanes of `v`.
    ///
    /// # Safety
    /// AVX is available.
    #[inline(always)]
    unsafe fn store_n(dst: &mut [f32], v: __m256) {
        if let Ok(whole) = <&mut [f32; 8]>::try_from(&mut *dst) {
            // SAFETY: `whole` holds 8 values; the caller's AVX.
            unsafe { _mm256_storeu_ps(whole.as_mut_ptr(), v) };
        } else {
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` holds 8 values; the caller's AVX.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            let n = dst.len();
            dst.copy_from_slice(&lanes[..n]);
        }
    }

    /// Copies `valid` (at most 8) channel planes into their lanes of the padded layout,
    /// a row at a time, 8 pixels of every channel per 8x8 transpose (a row's last few
    /// through masked loads). Lanes of absent channels get zeros.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fill_lanes(l: &Lanes, planes: &[f32], valid: usize, data: &mut [f32]) {
        let [ih, iw] = l.in_hw;
        let [pt, pl] = l.pads;
        let plen = ih * iw;
        // The raw loads and stores below rely on these: every input pixel has its place.
        assert!(valid <= 8 && planes.len() >= valid * plen);
        assert!(l.height >= pt + ih && l.width >= pl + iw && data.len() >= l.len());
        let src = planes.as_ptr();
        let dst = data.as_mut_ptr();
        let tail = iw % 8;
        let lane = |i: i32| if i < tail as i32 { -1 } else { 0 };
        let mask = _mm256_setr_epi32(
            lane(0),
            lane(1),
            lane(2),
            lane(3),
            lane(4),
            lane(5),
            lane(6),
            lane(7),
        );
        for y in 0..ih {
            let row = y * iw;
            let out = ((y + pt) * l.width + pl) * 8;
            let mut x0 = 0;
            while x0 < iw {
                let n = 8.min(iw - x0);
                let mut rows = [_mm256_setzero_ps(); 8];
                for (c, r) in rows.iter_mut().enumerate().take(valid) {
                    // SAFETY: pixels row + x0 .. row + x0 + n of channel c < valid exist
                    // (asserted above); a masked load reads only its `n` lanes.
                    unsafe {
                        let at = src.add(c * plen + row + x0);
                        *r = if n == 8 {
                            _mm256_loadu_ps(at)
                        } else {
                            _mm256_maskload_ps(at, mask)
                        };
                    }
                }
                // SAFETY: this function's AVX; padded pixels (y + pt, pl + x0 + j) for
                // j < n are inside the layout (asserted above).
                unsafe {
                    let pixels = transpose8(rows);
                    for (j, px) in pixels.iter().enumerate().take(n) {
                        _mm256_storeu_ps(dst.add(out + (x0 + j) * 8), *px);
                    }
                }
                x0 += n;
            }
        }
    }

    /// The window over a filled layout for its (at most 8) channels: 8 neighbouring
    /// outputs (in row-major order, across rows for narrow planes) of all 8 channels per
    /// step, as 8 FMA chains, transposed back into the channels' planes on the way out.
    /// `residual` (the planes of `out`'s shape) is added after the clamp.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn filter_lanes(
        l: &Lanes,
        data: &[f32],
        w: &[[f32; 8]; MAX_TAPS],
        bias: &[f32; 8],
        clamp: Option<(f32, f32)>,
        out: &mut [f32],
        residual: Option<&[f32]>,
    ) {
        let [oh, ow] = l.out_hw;
        let [sh, sw] = l.strides;
        let len = oh * ow;
        let valid = out.len() / len;
        // The loads below rely on the first: the last output's last tap reads padded pixel
        // ((oh - 1) * sh + (kh - 1) * dh, (ow - 1) * sw + (kw - 1) * dw), inside the plane
        // by the layout's construction.
        assert!(data.len() >= l.len() && l.ntaps <= MAX_TAPS);
        assert!(valid <= 8 && out.len() == valid * len);
        assert!(residual.is_none_or(|r| r.len() == out.len()));
        let src = data.as_ptr();
        let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        // SAFETY: `bias` holds 8 values.
        let bias = unsafe { _mm256_loadu_ps(bias.as_ptr()) };
        let (mut oy, mut ox) = (0, 0);
        for p0 in (0..len).step_by(8) {
            let n = 8.min(len - p0);
            // Input base of each output; a short last step repeats its first.
            let mut bases = [0usize; 8];
            for b in bases.iter_mut().take(n) {
                *b = (oy * sh * l.width + ox * sw) * 8;
                ox += 1;
                if ox == ow {
                    (ox, oy) = (0, oy + 1);
                }
            }
            for j in n..8 {
                bases[j] = bases[0];
            }
            let mut acc = [bias; 8];
            for (wt, &tap) in w.iter().zip(&l.taps).take(l.ntaps) {
                // SAFETY: `wt` holds 8 values; every base is that of an output, so
                // base + tap + 7 is inside `data` (asserted above); this function's FMA.
                unsafe {
                    let wv = _mm256_loadu_ps(wt.as_ptr());
                    for (a, &b) in acc.iter_mut().zip(&bases) {
                        *a = _mm256_fmadd_ps(_mm256_loadu_ps(src.add(b + tap)), wv, *a);
                    }
                }
            }
            for a in &mut acc {
                // max(lo, v) and min(hi, v) return v when it is NaN.
                *a = _mm256_min_ps(hi, _mm256_max_ps(lo, *a));
            }
            // SAFETY: this function's AVX.
            let channels = unsafe { transpose8(acc) };
            for (c, &v) in channels.iter().enumerate().take(valid) {
                let at = c * len + p0;
                // SAFETY: this function's AVX.
                unsafe {
                    let v = match residual {
                        Some(r) => _mm256_add_ps(v, load_n(&r[at..at + n])),
                        None => v,
                    };
                    store_n(&mut out[at..at + n], v);
                }
            }
        }
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
        // (input base, output offset) of the next unit, in row-major order: counted rather
        // than divided out of the unit index (1-3% on 64x64 planes).
        let (mut oy, mut block) = (0, 0);
        let mut next_unit = || {
            let x0 = block * 8;
            let at = (oy * p.stride * p.row + x0, oy * ow + x0);
            block += 1;
            if block == blocks_per_row {
                (block, oy) = (0, oy + 1);
            }
            at
        };
        let mut u = 0;
        while u + UNITS <= units {
            let at = [next_unit(), next_unit(), next_unit(), next_unit()];
            let bases = [at[0].0, at[1].0, at[2].0, at[3].0];
            // SAFETY: these units are below `units`.
            let v = unsafe { k.block(bases) };
            for (&(_, o), v) in at.iter().zip(v) {
                // SAFETY: this function's AVX.
                unsafe { store(out, len, o, v) };
            }
            u += UNITS;
        }
        for _ in u..units {
            let (base, o) = next_unit();
            // SAFETY: the unit is below `units`.
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
