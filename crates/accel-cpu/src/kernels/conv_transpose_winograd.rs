//! ConvTranspose at stride 2 with 3- or 4-tap kernels by Winograd F(2x2, 2x2) per output
//! phase.
//!
//! Output pixel (2q + a, 2r + b) of such a layer only receives the taps of parity
//! k0 = (a + pad) mod 2 on each axis: k0 + 2 from input row q + s_a and k0 from q + s_a + 1
//! (s_a = (a + pad - k0) / 2 - 1), so each of the four phases (a, b) is a 2x2 correlation of
//! the input. Two outputs of a 2-tap correlation take 3 multiplies instead of 4 by
//! F(2, 2), whose transforms hold only 0 and ±1: a 2x2 output tile of one phase takes 9 instead
//! of 16, and as for the 3x3 convolutions (`winograd`), summed over input channels the 9
//! elementwise products become 9 GEMMs `U[pos] (out x in) · V[pos] (in x tiles)` per phase.
//! That is 9 multiply-adds per input pixel and channel pair where GEMM + col2im does 16
//! (each of the U-Net's up1-up3: 11.8 M instead of 21 M).
//!
//! Tiles are the GEMM's columns: a block of `nr` tiles (raster order, across tile rows where
//! a row holds fewer) goes phase by phase through the input transform and 9 one-panel GEMMs,
//! then through the output transform, which writes the four phases' values of each output
//! row side by side. The input is first copied into zero-bordered planes whose rows are
//! split into even and odd columns, so a tile row's window values are contiguous. Measured
//! on the U-Net at one thread (Zen 4): up2 433 -> 291 us and up3 476 -> 352 us with AVX-512;
//! with AVX2 up1 423 -> 288, up2 448 -> 309, up3 485 -> 387 (up1's 16 tiles fill only half
//! of an AVX-512 panel, so it keeps GEMM + col2im there).

use super::gemm::{Blocking, Epilogue, PackedA, gemm_panel_rows};
use super::interleave::split_pairs;
use super::winograd::{Segment, interleave, segments};
use super::{SyncPtr, activation};
use crate::isa::{self, Isa};
use crate::scratch::Scratch;
use accel_core::ir::{Activation, Window};
use accel_core::ops::ResolvedWindow;
use rayon::prelude::*;

/// Input tile side of F(2, 2) (2 outputs from 3 inputs per axis), and its 3x3 positions.
const T: usize = 3;
const POS: usize = T * T;
/// Lanes the input transform handles at a time: a fixed size the compiler keeps in one
/// vector register, where a loop over a segment's own length (often 8 or 4 tiles) ran
/// scalar.
const CHUNK: usize = 8;
/// Output phases of a stride-2 layer, (a, b) at a * 2 + b.
const PHASES: usize = 4;
/// The filter transform G (3x2).
const G: [[f64; 2]; T] = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];

/// A stride-2 ConvTranspose's filters in the Winograd domain.
pub struct PhaseWinograd {
    in_channels: usize,
    out_channels: usize,
    kernel: [usize; 2],
    /// U[parity * POS + pos] for tap parity (k0y, k0x) at parity k0y * 2 + k0x, packed as
    /// GEMM A ([out, in]); a pad's parity decides which phase uses which.
    u: Vec<PackedA>,
}

impl PhaseWinograd {
    /// Whether a ConvTranspose may run this way: 2-D, one group, stride 2, no dilation, 3 or
    /// 4 taps per axis (2 taps per phase at most), deep enough for GEMMs to pay. Whether a
    /// given input does is [`PhaseWinograd::fits`].
    pub(crate) fn eligible(
        ic: usize,
        oc: usize,
        group: usize,
        kernel: &[usize],
        window: &Window,
    ) -> bool {
        let ones = |v: &[usize]| v.iter().all(|&d| d == 1);
        kernel.len() == 2
            && kernel.iter().all(|k| (3..=4).contains(k))
            && group == 1
            && ic >= 8
            && oc >= 8
            && window.strides == [2, 2]
            && ones(&window.dilations)
    }

    /// Transforms `w` ([ic, oc, kh, kw], ConvTranspose's layout) into U = G g G^T for every
    /// tap parity and channel pair, in f64.
    pub(crate) fn new(w: &[f32], ic: usize, oc: usize, kernel: [usize; 2]) -> PhaseWinograd {
        let [kh, kw] = kernel;
        assert_eq!(w.len(), ic * oc * kh * kw, "winograd: weight size");
        let mut u = Vec::with_capacity(PHASES * POS);
        for parity in 0..PHASES {
            let (ky0, kx0) = (parity / 2, parity % 2);
            // Window offset e = 0 takes tap k0 + 2 (when the kernel has it), e = 1 tap k0.
            let tap = |k0: usize, e: usize, k: usize| {
                let t = if e == 0 { k0 + 2 } else { k0 };
                (t < k).then_some(t)
            };
            let mut mats = vec![vec![0.0f32; oc * ic]; POS];
            for c in 0..ic {
                for o in 0..oc {
                    let at = |ky: usize, kx: usize| w[((c * oc + o) * kh + ky) * kw + kx] as f64;
                    let g: [[f64; 2]; 2] = std::array::from_fn(|ey| {
                        std::array::from_fn(|ex| match (tap(ky0, ey, kh), tap(kx0, ex, kw)) {
                            (Some(ky), Some(kx)) => at(ky, kx),
                            _ => 0.0,
                        })
                    });
                    for (i, gi) in G.iter().enumerate() {
                        for (j, gj) in G.iter().enumerate() {
                            let v: f64 = (0..2)
                                .flat_map(|a| (0..2).map(move |b| gi[a] * g[a][b] * gj[b]))
                                .sum();
                            mats[i * T + j][o * ic + c] = v as f32;
                        }
                    }
                }
            }
            u.extend(mats.iter().map(|m| PackedA::pack(m, oc, ic, ic, 1)));
        }
        PhaseWinograd {
            in_channels: ic,
            out_channels: oc,
            kernel,
            u,
        }
    }

    /// Holds the transformed filters as f16 from now on.
    pub fn use_f16(&mut self) {
        self.u = self.u.iter().map(PackedA::to_f16).collect();
    }

    pub fn bytes(&self) -> usize {
        self.u.iter().map(PackedA::bytes).sum()
    }

    /// Whether this geometry runs here: the resolved window is the one the filters were
    /// transformed for, and a phase has enough tiles to fill most of the GEMM panels (a
    /// half-empty panel costs as much as a full one).
    pub fn fits(&self, rw: &ResolvedWindow) -> bool {
        Self::fits_kernel(self.kernel, rw)
    }

    /// [`PhaseWinograd::fits`] for filters of `kernel` taps, before transforming them.
    pub(crate) fn fits_kernel(kernel: [usize; 2], rw: &ResolvedWindow) -> bool {
        let nr = Blocking::active().nr;
        if rw.output.len() != 2 {
            return false;
        }
        // Checked: a corrupt model may declare sizes whose products overflow.
        let tiles = rw
            .output
            .iter()
            .try_fold(1usize, |n, o| n.checked_mul(o.div_ceil(2).div_ceil(2)));
        let filled = tiles.is_some_and(|t| {
            let padded = t.div_ceil(nr).checked_mul(nr * 3);
            t > 0 && padded.is_some_and(|p| t.checked_mul(4).is_some_and(|t4| t4 >= p))
        });
        rw.kernel == kernel && rw.strides == [2, 2] && rw.dilations == [1, 1] && filled
    }

    /// One image: `x` is [ic, ih, iw], `out` [oc, oh, ow] (every value written).
    pub fn run(
        &self,
        x: &[f32],
        in_hw: [usize; 2],
        rw: &ResolvedWindow,
        bias: &[f32],
        act: Option<Activation>,
        out: &mut [f32],
    ) {
        let geo = Geometry::new(rw);
        let (ic, oc) = (self.in_channels, self.out_channels);
        assert_eq!(
            out.len(),
            oc * geo.out_hw[0] * geo.out_hw[1],
            "winograd: output size"
        );
        assert_eq!(x.len(), ic * in_hw[0] * in_hw[1], "winograd: input size");
        assert!(bias.len() >= oc, "winograd: bias too short");
        let lanes = geo.lanes();
        if lanes == 0 {
            return;
        }
        let Blocking { mr, nr } = Blocking::active();
        let mut padded = Scratch::new();
        let input = geo.fill(x, ic, in_hw, &mut padded);
        // Few blocks (the U-Net's up1 has one): split the output channels too, so every
        // thread has work; each such task repeats its block's input transform.
        let blocks = lanes.div_ceil(nr);
        let threads = rayon::current_num_threads();
        let row_tiles = oc.div_ceil(mr);
        let chunks = if threads > 1 && blocks < threads {
            threads.div_ceil(blocks).min(row_tiles)
        } else {
            1
        };
        let chunk_rows = row_tiles.div_ceil(chunks) * mr;
        let job = Blocks {
            w: self,
            input,
            geo: &geo,
            bias,
            act,
            out: SyncPtr(out.as_mut_ptr()),
        };
        let isa = isa::active();
        let task = |t: usize, buf: &mut (Scratch, Scratch)| {
            let (b, chunk) = (t / chunks, t % chunks);
            let rows = chunk * chunk_rows..((chunk + 1) * chunk_rows).min(oc);
            if rows.is_empty() {
                return;
            }
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Isa::Avx512 is only selected after runtime detection of avx512f.
                Isa::Avx512 => unsafe { job.run_avx512(b, rows, buf) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Isa::Avx2Fma is only selected after runtime detection of avx2 and fma.
                Isa::Avx2Fma => unsafe { job.run_avx2(b, rows, buf) },
                _ => job.block::<16>(b, rows, buf, false),
            }
        };
        let tasks = blocks * chunks;
        if threads > 1 && tasks > 1 {
            (0..tasks)
                .into_par_iter()
                .for_each_init(Default::default, |buf, t| task(t, buf));
        } else {
            let mut buf = Default::default();
            (0..tasks).for_each(|t| task(t, &mut buf));
        }
    }
}

/// Where each phase's windows lie, and the padded, column-split input planes.
///
/// Per axis, phase a's tile t (outputs 2t and 2t + 1 of the phase, at 4t + a and 4t + 2 + a
/// of the image) reads input rows 2t + start[a] + 0..3, which is padded row
/// 2t + start[a] - lo + 0..3. Padded column p is at phase p % 2, position p / 2 of its row.
struct Geometry {
    out_hw: [usize; 2],
    /// Tiles per axis: those of phase 0, which has the most outputs.
    tiles: [usize; 2],
    /// Per axis and phase: the tap parity k0 and the window's first input row (column).
    parity: [[usize; 2]; 2],
    start: [[isize; 2]; 2],
    /// Per axis: the input row (column) of padded row (column) 0.
    lo: [isize; 2],
    /// Padded rows per channel, and values per column-phase row.
    rows: usize,
    width: usize,
}

impl Geometry {
    fn new(rw: &ResolvedWindow) -> Geometry {
        let out_hw = [rw.output[0], rw.output[1]];
        let mut parity = [[0; 2]; 2];
        let mut start = [[0; 2]; 2];
        for axis in 0..2 {
            let pad = rw.pads_begin[axis];
            for a in 0..2 {
                let k0 = (a + pad) % 2;
                parity[axis][a] = k0;
                start[axis][a] = ((a + pad - k0) / 2) as isize - 1;
            }
        }
        let tiles = out_hw.map(|o| o.div_ceil(2).div_ceil(2));
        let mut lo = start.map(|s| s[0].min(s[1]));
        // Input column 0 at an even padded column (one more zero column where needed), so
        // that each input row splits into (even, odd) pairs from its first value on.
        if lo[1] < 0 && lo[1] % 2 != 0 {
            lo[1] -= 1;
        }
        // Rows up to 2 (tiles - 1) + the later phase's start + 2.
        let span = |axis: usize| {
            let s = start[axis];
            2 * tiles[axis].saturating_sub(1) + (s[0].max(s[1]) - lo[axis]) as usize + T
        };
        Geometry {
            out_hw,
            tiles,
            parity,
            start,
            lo,
            rows: span(0),
            width: span(1).div_ceil(2),
        }
    }

    /// Tiles of a phase: the GEMM columns of one image.
    fn lanes(&self) -> usize {
        self.tiles[0] * self.tiles[1]
    }

    fn channel_len(&self) -> usize {
        self.rows * 2 * self.width
    }

    /// The input's channels in the padded, column-split layout.
    fn fill<'a>(
        &self,
        x: &[f32],
        channels: usize,
        [ih, iw]: [usize; 2],
        buf: &'a mut Scratch,
    ) -> &'a [f32] {
        let width = self.width;
        // CHUNK values of slack after the last plane: a transform chunk may read past it.
        let data = buf.reset_for_overwrite(channels * self.channel_len() + CHUNK);
        data[channels * self.channel_len()..].fill(0.0);
        // Input columns that land in the padded rows, from padded column `first`.
        let x_first = self.lo[1].max(0) as usize;
        let x_end = ((self.lo[1] + 2 * width as isize).max(0) as usize).min(iw);
        let first = (x_first as isize - self.lo[1]) as usize;
        let isa = isa::active();
        let fill_channel = |(c, plane): (usize, &mut [f32])| {
            // One pass of zeros for the plane (per row, the calls cost more than the values).
            plane.fill(0.0);
            for (py, row) in plane.chunks_exact_mut(2 * width).enumerate() {
                let y = py as isize + self.lo[0];
                if y < 0 || y >= ih as isize || x_first >= x_end {
                    continue;
                }
                let src = &x[(c * ih + y as usize) * iw..][x_first..x_end];
                let (even, odd) = row.split_at_mut(width);
                // An odd first column goes to its place, the rest in (even, odd) pairs.
                let (src, p) = if first % 2 == 1 {
                    odd[first / 2] = src[0];
                    (&src[1..], first + 1)
                } else {
                    (src, first)
                };
                split_pairs(isa, src, &mut even[p / 2..], &mut odd[p / 2..]);
            }
        };
        let planes = &mut data[..channels * self.channel_len()];
        if rayon::current_num_threads() > 1 && channels > 1 {
            planes
                .par_chunks_exact_mut(self.channel_len())
                .enumerate()
                .for_each(fill_channel);
        } else {
            planes
                .chunks_exact_mut(self.channel_len())
                .enumerate()
                .for_each(fill_channel);
        }
        data
    }
}

/// One image's blocks of tiles.
struct Blocks<'a> {
    w: &'a PhaseWinograd,
    input: &'a [f32],
    geo: &'a Geometry,
    bias: &'a [f32],
    act: Option<Activation>,
    /// Each task writes its output channels of its block's tiles, disjoint from every other.
    out: SyncPtr,
}

/// Distance between V's 9 B panels of [ic][N]: one row more than a panel, so that the input
/// transform's stores per channel do not fall 2^k bytes apart into one L1 set.
#[inline(always)]
fn panel_stride<const N: usize>(ic: usize) -> usize {
    (ic + 1) * N
}

impl Blocks<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self, b: usize, rows: std::ops::Range<usize>, buf: &mut (Scratch, Scratch)) {
        self.block::<16>(b, rows, buf, true)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn run_avx512(&self, b: usize, rows: std::ops::Range<usize>, buf: &mut (Scratch, Scratch)) {
        self.block::<32>(b, rows, buf, true)
    }

    /// Output channels `rows` of block `b`: per phase V = B^T d B and M = U · V, then
    /// A^T M A into the output. `buf` holds V and M.
    #[inline(always)]
    fn block<const N: usize>(
        &self,
        b: usize,
        rows: std::ops::Range<usize>,
        (v_buf, m_buf): &mut (Scratch, Scratch),
        avx: bool,
    ) {
        let mut segs = [Segment::default(); N];
        let count = segments::<N>(self.geo.tiles, b, &mut segs);
        let segs = &segs[..count];
        let lanes = segs.iter().map(|s| s.len).sum::<usize>();
        let (ic, oc) = (self.w.in_channels, self.w.out_channels);
        let stride = panel_stride::<N>(ic);
        let v = v_buf.reset_for_overwrite(POS * stride);
        // M is [oc][phase][pos][N] for every channel (tasks index it by channel), so that the
        // output transform reads one channel's 36 rows together.
        let m_ld = PHASES * POS * N;
        let m = m_buf.reset_for_overwrite(oc * m_ld);
        // A last block's lanes past its tiles start at zero (later only a chunk running past
        // a run's end writes there, values of the input), so the GEMMs run on whole panels
        // (unmasked stores) and nothing stale enters M.
        if lanes < N {
            for pos in 0..POS {
                for c in 0..ic {
                    v[pos * stride + c * N..][lanes..N].fill(0.0);
                }
            }
        }
        for phase in 0..PHASES {
            let (a, bx) = (phase / 2, phase % 2);
            self.input_transform::<N>([a, bx], segs, v, stride);
            let parity = self.geo.parity[0][a] * 2 + self.geo.parity[1][bx];
            for pos in 0..POS {
                gemm_panel_rows(
                    &self.w.u[parity * POS + pos],
                    rows.clone(),
                    &v[pos * stride..][..ic * N],
                    N,
                    &mut m[(phase * POS + pos) * N..],
                    m_ld,
                    Epilogue::NONE,
                );
            }
        }
        let mut y = [[[[0.0f32; N]; 2]; 2]; PHASES];
        for o in rows {
            for (phase, yp) in y.iter_mut().enumerate() {
                output_transform(&m[o * m_ld + phase * POS * N..][..POS * N], yp);
            }
            self.store(o, segs, &mut y, avx);
        }
    }

    /// Where window value (dy, dx) of phase (a, b) for the first tile of segment `s` lies
    /// within a channel's padded planes, at dy * 3 + dx.
    #[inline(always)]
    fn window_offsets(&self, [a, b]: [usize; 2], s: &Segment) -> [usize; POS] {
        let geo = self.geo;
        let row0 = (geo.start[0][a] - geo.lo[0]) as usize + 2 * s.ty;
        let col0 = (geo.start[1][b] - geo.lo[1]) as usize;
        std::array::from_fn(|k| {
            let col = col0 + k % T;
            ((row0 + k / T) * 2 + col % 2) * geo.width + s.tx + col / 2
        })
    }

    /// V = B^T d B of phase (a, b)'s windows d for the block's tiles (`segs`) and every
    /// channel: position (i, j) into row c of panel i * 3 + j of `v` (panels `stride`
    /// apart, rows of N lanes). Each window value is read straight from the padded planes,
    /// which hold a tile row's values of one window position side by side, CHUNK lanes at a
    /// time (narrower where fewer lanes are left in the row). A chunk past a segment's end
    /// writes values that the next chunk overwrites.
    #[inline(always)]
    fn input_transform<const N: usize>(
        &self,
        phase: [usize; 2],
        segs: &[Segment],
        v: &mut [f32],
        stride: usize,
    ) {
        // The block's chunks: where each reads its window values in channel 0, the lane it
        // writes from, and how many lanes.
        let mut chunks = [Chunk::default(); N];
        let mut count = 0;
        for s in segs {
            let off = self.window_offsets(phase, s);
            let mut done = 0;
            while done < s.len {
                let (lane, needed) = (s.lane + done, s.len - done);
                let room = N - lane;
                let width = if room >= CHUNK {
                    CHUNK
                } else if needed <= 4 && room >= 4 {
                    4
                } else {
                    1
                };
                chunks[count] = Chunk {
                    src: off.map(|o| o + done),
                    lane,
                    width,
                };
                count += 1;
                done += width;
            }
        }
        let job = ChannelTransform {
            input: self.input,
            channel_len: self.geo.channel_len(),
            chunks: &chunks[..count],
            v,
            row_len: N,
            stride,
            channels: self.w.in_channels,
        };
        job.run();
    }

    /// Output channel o's four phases of this block: act(y + bias), each output row's
    /// values from both column phases side by side, clipped to the output.
    #[inline(always)]
    fn store<const N: usize>(
        &self,
        o: usize,
        segs: &[Segment],
        y: &mut [[[[f32; N]; 2]; 2]; PHASES],
        avx: bool,
    ) {
        let bias = self.bias[o];
        let flat = y.as_flattened_mut().as_flattened_mut().as_flattened_mut();
        flat.iter_mut().for_each(|v| *v += bias);
        if let Some(a) = self.act {
            activation::apply_slice(a, flat);
        }
        let [oh, ow] = self.geo.out_hw;
        let mut row = [[0.0f32; 4]; N];
        for r in 0..4 {
            // Output row 4t + r is row i = r / 2 of phase a = r % 2; its column 4u + k is
            // column j = k / 2 of phase (a, k % 2).
            let (i, a) = (r / 2, r % 2);
            let (p0, p1) = (a * 2, a * 2 + 1);
            let vals = [y[p0][i][0], y[p1][i][0], y[p0][i][1], y[p1][i][1]];
            interleave(&vals, &mut row, avx);
            let flat = row.as_flattened();
            for s in segs {
                let oy = 4 * s.ty + r;
                if oy >= oh {
                    continue;
                }
                let x0 = 4 * s.tx;
                let width = (4 * s.len).min(ow - x0);
                let at = (o * oh + oy) * ow + x0;
                // SAFETY: this task alone writes channel o's rows of its block's tiles:
                // columns x0 .. x0 + width of row oy, inside the output (`run` checked its
                // size; x0 < ow as tile tx < ceil(ceil(ow / 2) / 2)).
                let dst = unsafe { std::slice::from_raw_parts_mut(self.out.get().add(at), width) };
                dst.copy_from_slice(&flat[4 * s.lane..][..width]);
            }
        }
    }
}

/// W lanes of one segment's tiles for the input transform: window value k of channel c at
/// `input[c * channel_len + src[k] ..][..W]`, written from lane `lane` of each V row.
#[derive(Clone, Copy, Default)]
struct Chunk {
    src: [usize; POS],
    lane: usize,
    width: usize,
}

/// The input transform of one block and phase, every channel: V position p of channel c
/// into `v[p * stride + c * row_len + lane ..][..width]` for each chunk.
struct ChannelTransform<'a> {
    input: &'a [f32],
    channel_len: usize,
    chunks: &'a [Chunk],
    v: &'a mut [f32],
    row_len: usize,
    stride: usize,
    channels: usize,
}

impl ChannelTransform<'_> {
    /// Channel by channel, each channel's chunks in lane order, so a row of V is written
    /// whole while its lines are in L1. The bounds are checked once per chunk for the last
    /// channel, which reads and writes furthest; the loop then runs on pointers (with a
    /// bounds check per access and the address arithmetic redone per channel, the
    /// transforms took longer than the GEMMs).
    #[inline(always)]
    fn run(self) {
        let Some(last) = self.channels.checked_sub(1) else {
            return;
        };
        for ch in self.chunks {
            let max_src = ch.src.iter().max().copied().unwrap_or(0);
            assert!(
                ch.width <= CHUNK
                    && last * self.channel_len + max_src + ch.width <= self.input.len(),
                "winograd: window reads outside the padded input"
            );
            assert!(
                (POS - 1) * self.stride + last * self.row_len + ch.lane + ch.width <= self.v.len(),
                "winograd: V writes outside V"
            );
        }
        let (input, v) = (self.input.as_ptr(), self.v.as_mut_ptr());
        for c in 0..self.channels {
            // SAFETY: every chunk's reads and writes for channel c <= last lie inside the
            // slices (asserted above for the last channel; earlier ones lie lower), and `v`
            // is borrowed mutably, so nothing else reads or writes it.
            unsafe {
                let (src, dst) = (input.add(c * self.channel_len), v.add(c * self.row_len));
                for ch in self.chunks {
                    match ch.width {
                        CHUNK => self.chunk::<CHUNK>(src, dst, ch),
                        4 => self.chunk::<4>(src, dst, ch),
                        _ => self.chunk::<1>(src, dst, ch),
                    }
                }
            }
        }
    }

    /// V = B^T d B, B^T = [[1, -1, 0], [0, 1, 0], [0, -1, 1]], for W lanes of one channel.
    ///
    /// # Safety
    /// `src + ch.src[k]` holds W values for every k, and `dst + p * stride + ch.lane` room
    /// for W values for every position p, none of it read or written elsewhere meanwhile.
    #[inline(always)]
    unsafe fn chunk<const W: usize>(&self, src: *const f32, dst: *mut f32, ch: &Chunk) {
        // SAFETY: the caller's contract; [f32; W] is read and written unaligned.
        unsafe {
            let d = |k: usize| -> [f32; W] {
                std::ptr::read_unaligned(src.add(ch.src[k]).cast::<[f32; W]>())
            };
            let (d00, d01, d02) = (d(0), d(1), d(2));
            let (d10, d11, d12) = (d(3), d(4), d(5));
            let (d20, d21, d22) = (d(6), d(7), d(8));
            // Along rows first: [d0 - d1, d1, d2 - d1] per window row.
            let t0 = [sub(d00, d01), d01, sub(d02, d01)];
            let t1 = [sub(d10, d11), d11, sub(d12, d11)];
            let t2 = [sub(d20, d21), d21, sub(d22, d21)];
            let out = dst.add(ch.lane);
            let put = |p: usize, x: [f32; W]| {
                std::ptr::write_unaligned(out.add(p * self.stride).cast::<[f32; W]>(), x)
            };
            // Then down the columns.
            for j in 0..T {
                put(j, sub(t0[j], t1[j]));
                put(T + j, t1[j]);
                put(2 * T + j, sub(t2[j], t1[j]));
            }
        }
    }
}

/// a - b, lane by lane.
#[inline(always)]
fn sub<const W: usize>(a: [f32; W], b: [f32; W]) -> [f32; W] {
    let mut r = a;
    for (r, b) in r.iter_mut().zip(b) {
        *r -= b;
    }
    r
}

/// Y = A^T M A, A^T = [[1, 1, 0], [0, 1, 1]], for every lane: `m` holds the 9 positions'
/// rows of N lanes, `y[i][j]` gets output (i, j) of each lane's 2x2 tile.
#[inline(always)]
fn output_transform<const N: usize>(m: &[f32], y: &mut [[[f32; N]; 2]; 2]) {
    let row = |pos: usize| -> &[f32; N] { m[pos * N..(pos + 1) * N].try_into().expect("N lanes") };
    let mut s = [[[0.0f32; N]; 2]; T];
    for (i, si) in s.iter_mut().enumerate() {
        let (m0, m1, m2) = (row(i * T), row(i * T + 1), row(i * T + 2));
        for l in 0..N {
            si[0][l] = m0[l] + m1[l];
            si[1][l] = m1[l] + m2[l];
        }
    }
    for j in 0..2 {
        for l in 0..N {
            y[0][j][l] = s[0][j][l] + s[1][j][l];
            y[1][j][l] = s[1][j][l] + s[2][j][l];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    /// ConvTranspose at stride 2 by its definition, in f64: out[o, iy*2 + ky - pt,
    /// ix*2 + kx - pl] += x[c, iy, ix] * w[c, o, ky, kx].
    #[allow(clippy::too_many_arguments)]
    fn direct(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        [ic, ih, iw]: [usize; 3],
        oc: usize,
        [kh, kw]: [usize; 2],
        [pt, pl]: [usize; 2],
        [oh, ow]: [usize; 2],
    ) -> Vec<f32> {
        let mut out: Vec<f64> = (0..oc * oh * ow)
            .map(|i| bias[i / (oh * ow)] as f64)
            .collect();
        for c in 0..ic {
            for o in 0..oc {
                for iy in 0..ih {
                    for ix in 0..iw {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let (y, xo) = (
                                    (iy * 2 + ky) as isize - pt as isize,
                                    (ix * 2 + kx) as isize - pl as isize,
                                );
                                if y >= 0 && xo >= 0 && (y as usize) < oh && (xo as usize) < ow {
                                    out[(o * oh + y as usize) * ow + xo as usize] +=
                                        x[(c * ih + iy) * iw + ix] as f64
                                            * w[((c * oc + o) * kh + ky) * kw + kx] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }

    /// Random sizes, kernels (3 or 4 taps per axis), pads, output padding and activations,
    /// at 1 and 2 threads: every phase, partial tiles at the bottom and right, blocks that
    /// span tile rows and partial blocks, against the definition.
    #[test]
    fn matches_definition() {
        let mut rng = rand::rng();
        for case in 0..24 {
            let (ic, oc) = (rng.random_range(8..=24), rng.random_range(8..=20));
            let (ih, iw) = (rng.random_range(1..=12), rng.random_range(1..=40));
            let kernel = [rng.random_range(3..=4), rng.random_range(3..=4)];
            let pads: [usize; 4] = std::array::from_fn(|i| rng.random_range(0..kernel[i % 2]));
            let opad = [rng.random_range(0..2), rng.random_range(0..2)];
            let out_len = |i: usize, k: usize, a: usize| (i - 1) * 2 + k + opad[a];
            let full = [out_len(ih, kernel[0], 0), out_len(iw, kernel[1], 1)];
            if full[0] <= pads[0] + pads[2] || full[1] <= pads[1] + pads[3] {
                continue;
            }
            let (oh, ow) = (full[0] - pads[0] - pads[2], full[1] - pads[1] - pads[3]);
            let rw = ResolvedWindow {
                kernel: kernel.to_vec(),
                strides: vec![2, 2],
                dilations: vec![1, 1],
                pads_begin: vec![pads[0], pads[1]],
                pads_end: vec![pads[2], pads[3]],
                output: vec![oh, ow],
            };
            let rand = |n: usize, rng: &mut rand::rngs::ThreadRng| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
            };
            let x = rand(ic * ih * iw, &mut rng);
            let w = rand(ic * oc * kernel[0] * kernel[1], &mut rng);
            let bias = rand(oc, &mut rng);
            let mut want = direct(
                &x,
                &w,
                &bias,
                [ic, ih, iw],
                oc,
                kernel,
                [pads[0], pads[1]],
                [oh, ow],
            );
            let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let act = [
                None,
                Some(Activation::Relu),
                Some(Activation::Clip {
                    min: -0.5,
                    max: 0.5,
                }),
                Some(Activation::Sigmoid),
            ][case % 4];
            if let Some(a) = act {
                activation::apply_slice(a, &mut want);
            }
            let kernel_w = PhaseWinograd::new(&w, ic, oc, kernel);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut got = vec![f32::NAN; oc * oh * ow];
                pool.install(|| kernel_w.run(&x, [ih, iw], &rw, &bias, act, &mut got));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * scale,
                        "case {case}: x [{ic}, {ih}, {iw}] -> {oc}, kernel {kernel:?}, pads {pads:?}, output padding {opad:?}, {threads} threads: [{i}] {g} vs {w}"
                    );
                }
            }
        }
    }
}
