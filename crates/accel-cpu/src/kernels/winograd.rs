//! Conv 3x3 at stride 1 by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, 2015).
//!
//! A 4x4 output tile of one (output, input) channel pair is `A^T [U ⊙ V] A`, where
//! `U = G g G^T` is the transformed 3x3 filter and `V = B^T d B` the transformed 6x6 input
//! tile: 36 multiplies instead of 144. Summed over input channels, the 36 elementwise
//! products become 36 GEMMs `U[pos] (out x in) · V[pos] (in x tiles)`. The U matrices are
//! transformed and packed once at compile time. At run time the tiles, in raster order, are
//! cut into blocks of one B panel (`nr` tiles, running on into the next tile row where one
//! ends); each block goes through input transform, 36 one-panel GEMMs and output transform
//! (bias, activation and residual included) while its buffers are hot in L2. (Blocks within
//! one tile row left a third of each AVX-512 panel empty on the CRNN's conv2, whose rows
//! hold 44 tiles.)
//!
//! The input is first copied into zero-bordered planes whose rows are split into 4 column
//! phases (padded column x at phase x % 4, position x / 4): tile t's value at column c of
//! its window is then phase c % 4 at position t + c / 4, so a block's 36 window values per
//! channel are 36 contiguous runs of `nr` lanes and every transform is plain vector
//! arithmetic across the block's tiles.
//!
//! The transforms scale values by up to ~10, so the result is less exact than a direct
//! convolution; the random tests hold it to 1e-4 of the output's magnitude, and the CRNN's
//! probabilities stay within 4e-6 of ONNX Runtime's.

use super::gemm::{Blocking, Epilogue, PackedA, gemm_panel};
use super::pool::nan_max;
use super::{SyncPtr, activation};
use crate::isa::{self, Isa};
use crate::scratch::Scratch;
use accel_core::ir::{Activation, Window};
use accel_core::ops::ResolvedWindow;
use rayon::prelude::*;

/// Output tile side; the input tile is OUT + 2.
const OUT: usize = 4;
const TILE: usize = OUT + 2;
/// Positions of the transformed 6x6 tile.
const POS: usize = TILE * TILE;

/// The filter transform G (6x3).
const G: [[f64; 3]; TILE] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// A 3x3 stride-1 convolution's filters in the Winograd domain.
pub struct Winograd {
    out_channels: usize,
    in_channels: usize,
    /// U[pos] for every (output, input) channel pair, packed as GEMM A ([out, in]).
    u: Vec<PackedA>,
}

impl Winograd {
    /// The filters of a convolution that may run this way: a dense 3x3 at stride 1 without
    /// dilation, deep enough for the GEMMs to pay (with fewer channels the transforms
    /// dominate). Whether a given input does is [`Winograd::fits`].
    pub(crate) fn for_conv(
        w: &[f32],
        oc: usize,
        ic: usize,
        group: usize,
        kernel: [usize; 2],
        window: &Window,
    ) -> Option<Winograd> {
        let ones = |v: &[usize]| v.iter().all(|&d| d == 1);
        let deep = ic >= 8 && oc >= 8;
        (kernel == [3, 3] && group == 1 && deep && ones(&window.strides) && ones(&window.dilations))
            .then(|| Winograd::new(w, oc, ic))
    }

    /// Whether this output is wide enough that a tile row fills most of a B panel. (Kept
    /// from when blocks stayed within a row; narrower outputs, whose blocks would gather
    /// every value from several runs, were not measured since.)
    pub fn fits(&self, rw: &ResolvedWindow) -> bool {
        let (nr, tiles_per_row) = (Blocking::active().nr, rw.output[1].div_ceil(OUT));
        rw.kernel == [3, 3]
            && rw.strides == [1, 1]
            && rw.dilations == [1, 1]
            && tiles_per_row * 4 >= nr * 3
    }

    /// Transforms `w` ([oc, ic, 3, 3]) into U = G g G^T per channel pair, in f64.
    fn new(w: &[f32], oc: usize, ic: usize) -> Winograd {
        let mut u = vec![vec![0.0f32; oc * ic]; POS];
        for (pair, g) in w.chunks_exact(9).take(oc * ic).enumerate() {
            // G g: 6x3.
            let mut gg = [[0.0f64; 3]; TILE];
            for (r, row) in gg.iter_mut().enumerate() {
                for (c, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|a| G[r][a] * g[a * 3 + c] as f64).sum();
                }
            }
            // (G g) G^T: 6x6.
            for (r, row) in gg.iter().enumerate() {
                for (k, gk) in G.iter().enumerate() {
                    u[r * TILE + k][pair] = (0..3).map(|c| row[c] * gk[c]).sum::<f64>() as f32;
                }
            }
        }
        Winograd {
            out_channels: oc,
            in_channels: ic,
            u: u.iter().map(|m| PackedA::pack(m, oc, ic, ic, 1)).collect(),
        }
    }

    /// Holds the transformed filters as f16 from now on.
    pub fn use_f16(&mut self) {
        self.u = self.u.iter().map(PackedA::to_f16).collect();
    }

    pub fn bytes(&self) -> usize {
        self.u.iter().map(PackedA::bytes).sum()
    }

    /// One image: `x` is [ic, ih, iw], `out` [oc, oh, ow] (every value written), `residual`
    /// laid out like `out` and added last. With `pooled`, `out` is the 2x2 max pool at
    /// stride 2 of that, [oc, oh / 2, ow / 2], taken from each 4x4 tile while it is in
    /// registers (no residual then).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        x: &[f32],
        in_hw: [usize; 2],
        rw: &ResolvedWindow,
        bias: &[f32],
        act: Option<Activation>,
        residual: Option<&[f32]>,
        pooled: bool,
        out: &mut [f32],
    ) {
        let (oh, ow) = (rw.output[0], rw.output[1]);
        let nr = Blocking::active().nr;
        let tiles = [oh.div_ceil(OUT), ow.div_ceil(OUT)];
        let phases = PhasePlanes::new(tiles);
        let out_hw = if pooled { [oh / 2, ow / 2] } else { [oh, ow] };
        assert_eq!(
            out.len(),
            self.out_channels * out_hw[0] * out_hw[1],
            "winograd: output size"
        );
        assert!(
            !pooled || residual.is_none(),
            "winograd: a pooled output takes no residual"
        );
        assert!(bias.len() >= self.out_channels, "winograd: bias too short");
        if let Some(r) = residual {
            assert_eq!(r.len(), out.len(), "winograd: residual size");
        }
        let mut padded = Scratch::new();
        let input = phases.fill(x, self.in_channels, in_hw, rw, &mut padded);
        let job = Blocks {
            w: self,
            input,
            phases,
            out_hw,
            pooled,
            tiles,
            bias,
            act,
            residual,
            out: SyncPtr(out.as_mut_ptr()),
        };
        let blocks = (tiles[0] * tiles[1]).div_ceil(nr);
        let isa = isa::active();
        let task = |b: usize, buf: &mut (Scratch, Scratch)| match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::Avx512 is only selected after runtime detection of avx512f.
            Isa::Avx512 => unsafe { job.run_avx512(b, buf) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::Avx2Fma is only selected after runtime detection of avx2 and fma.
            Isa::Avx2Fma => unsafe { job.run_avx2(b, buf) },
            _ => job.block::<16>(b, buf, false),
        };
        if rayon::current_num_threads() > 1 && blocks > 1 {
            (0..blocks)
                .into_par_iter()
                .for_each_init(Default::default, |buf, b| task(b, buf));
        } else {
            let mut buf = Default::default();
            (0..blocks).for_each(|b| task(b, &mut buf));
        }
    }
}

/// The geometry of the zero-bordered, 4-phase-split input planes: `rows` padded rows per
/// channel, each 4 phase rows of `width` values. `width` covers every tile of a row reading
/// at position t + 1; gathered chunks may read up to CHUNK values past a run's end, into the
/// next phase row or the slack after the last one.
#[derive(Clone, Copy)]
struct PhasePlanes {
    rows: usize,
    width: usize,
}

impl PhasePlanes {
    fn new(tiles: [usize; 2]) -> PhasePlanes {
        PhasePlanes {
            rows: tiles[0] * OUT + 2,
            width: tiles[1] + 1,
        }
    }

    fn channel_len(self) -> usize {
        self.rows * OUT * self.width
    }

    /// Phase row `phase` of padded row `row` of channel `c`, as an offset.
    fn at(self, c: usize, row: usize, phase: usize) -> usize {
        (c * self.rows + row) * OUT * self.width + phase * self.width
    }

    /// The input's channels in this layout, the data starting at the leading pads; padded
    /// rows and columns the tiles never reach are left out.
    fn fill<'a>(
        self,
        x: &[f32],
        channels: usize,
        [ih, iw]: [usize; 2],
        rw: &ResolvedWindow,
        buf: &'a mut Scratch,
    ) -> &'a [f32] {
        let (pt, pl) = (rw.pads_begin[0], rw.pads_begin[1]);
        let rows = ih.min(self.rows.saturating_sub(pt));
        let cols = iw.min((OUT * self.width).saturating_sub(pl));
        let data = buf.reset_for_overwrite(channels * self.channel_len() + CHUNK);
        data[channels * self.channel_len()..].fill(0.0);
        let planes = &mut data[..channels * self.channel_len()];
        // Row by row, zeros first: the row is then hot when its values overwrite them.
        let width = self.width;
        let fill_channel = |(c, plane): (usize, &mut [f32])| {
            for (py, padded_row) in plane.chunks_exact_mut(OUT * width).enumerate() {
                let Some(y) = py.checked_sub(pt).filter(|&y| y < rows) else {
                    padded_row.fill(0.0);
                    continue;
                };
                let src = &x[(c * ih + y) * iw..][..cols];
                split_row(src, pl, width, padded_row);
            }
        };
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

/// Writes `src`, placed at padded column `left`, into 4 phase rows of `width` values (padded
/// column x at phase x % 4, position x / 4), zeros elsewhere. Whole groups of 4 columns go
/// in one loop, which compiles to loads and shuffles.
fn split_row(src: &[f32], left: usize, width: usize, dst: &mut [f32]) {
    dst.fill(0.0);
    let end = (left + src.len()).min(OUT * width);
    let (g0, g1) = (left.div_ceil(OUT), end / OUT);
    let mut put = |x: usize, v: f32| dst[(x % OUT) * width + x / OUT] = v;
    if g0 >= g1 {
        (left..end).for_each(|x| put(x, src[x - left]));
        return;
    }
    (left..g0 * OUT).for_each(|x| put(x, src[x - left]));
    (g1 * OUT..end).for_each(|x| put(x, src[x - left]));
    let (p0, rest) = dst.split_at_mut(width);
    let (p1, rest) = rest.split_at_mut(width);
    let (p2, p3) = rest.split_at_mut(width);
    let groups = src[g0 * OUT - left..].chunks_exact(OUT).take(g1 - g0);
    for (j, g) in (g0..g1).zip(groups) {
        (p0[j], p1[j], p2[j], p3[j]) = (g[0], g[1], g[2], g[3]);
    }
}

/// A block's run of tiles within one tile row: tile row, first tile, tiles, first lane.
#[derive(Clone, Copy, Default)]
pub(super) struct Segment {
    pub ty: usize,
    pub tx: usize,
    pub len: usize,
    pub lane: usize,
}

/// The segments of block `b` (lanes b * N ..) of a `tiles[0]` x `tiles[1]` grid of tiles in
/// raster order, at most N; returns how many.
pub(super) fn segments<const N: usize>(
    tiles: [usize; 2],
    b: usize,
    segs: &mut [Segment; N],
) -> usize {
    let (total, per_row) = (tiles[0] * tiles[1], tiles[1]);
    let (first, end) = (b * N, ((b + 1) * N).min(total));
    let (mut l, mut count) = (first, 0);
    while l < end {
        let (ty, tx) = (l / per_row, l % per_row);
        let len = (per_row - tx).min(end - l);
        segs[count] = Segment {
            ty,
            tx,
            len,
            lane: l - first,
        };
        count += 1;
        l += len;
    }
    count
}

/// Lanes copied at a time where a block's window values are gathered from several runs: a
/// fixed size compiles to vector moves, where a run's own length was a memmove call.
const CHUNK: usize = 8;
/// Room for N lanes plus a chunk that runs past them.
const GATHER: usize = 64;

/// The blocks of one image: block b is the tiles b * N .. in raster order.
struct Blocks<'a> {
    w: &'a Winograd,
    input: &'a [f32],
    phases: PhasePlanes,
    /// The output's size: the convolution's, or with `pooled` its 2x2 max pool's.
    out_hw: [usize; 2],
    pooled: bool,
    tiles: [usize; 2],
    bias: &'a [f32],
    act: Option<Activation>,
    residual: Option<&'a [f32]>,
    /// Each block writes its own tiles' outputs, disjoint from every other block's.
    out: SyncPtr,
}

impl Blocks<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self, b: usize, buf: &mut (Scratch, Scratch)) {
        self.block::<16>(b, buf, true)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn run_avx512(&self, b: usize, buf: &mut (Scratch, Scratch)) {
        self.block::<32>(b, buf, true)
    }

    /// Block `b` of N tiles (N = the GEMM's `nr`): V = B^T d B into N-wide B panels,
    /// M[pos] = U[pos] · V[pos], then A^T M A into the output. `buf` holds V and M.
    #[inline(always)]
    fn block<const N: usize>(&self, b: usize, (v_buf, m_buf): &mut (Scratch, Scratch), avx: bool) {
        const { assert!(N + CHUNK <= GATHER) };
        let mut segs = [Segment::default(); N];
        let count = segments::<N>(self.tiles, b, &mut segs);
        let segs = &segs[..count];
        let lanes = segs.iter().map(|s| s.len).sum::<usize>();
        let (ic, oc) = (self.w.in_channels, self.w.out_channels);
        let v = v_buf.reset_for_overwrite(POS * panel_stride::<N>(ic));
        // Transform buffers, every value overwritten per channel: zeroed once per block.
        let mut rows = [[[0.0f32; N]; TILE]; TILE];
        match segs {
            // N tiles of one row: read straight from the phase rows.
            [s] if s.len == N => {
                for c in 0..ic {
                    self.input_transform::<N>(c, s.ty * OUT, s.tx, &mut rows, v);
                }
            }
            _ => {
                let mut gathered = [[0.0f32; GATHER]; TILE];
                for c in 0..ic {
                    self.input_transform_gathered::<N>(c, segs, &mut gathered, &mut rows, v);
                }
            }
        }
        // M is [oc][pos][N], so that the output transform reads one channel's 36 rows
        // together (as [pos][oc][N] they were 4 KB apart, all in one set of L1).
        let m = m_buf.reset_for_overwrite(POS * oc * N);
        for pos in 0..POS {
            let panel = &v[pos * panel_stride::<N>(ic)..][..ic * N];
            gemm_panel(
                &self.w.u[pos],
                panel,
                lanes,
                &mut m[pos * N..],
                POS * N,
                Epilogue::NONE,
            );
        }
        let mut sums = [[[0.0f32; N]; OUT]; TILE];
        let mut tile = [[[0.0f32; N]; OUT]; OUT];
        for o in 0..oc {
            output_transform::<N>(m, o, &mut sums, &mut tile);
            self.store(o, segs, &mut tile, avx);
        }
    }

    /// V = B^T d B of channel c's windows at padded row y0, tiles tx0 .. tx0 + N, into row
    /// c of the 36 B panels in `v`; `t` holds the first pass.
    #[inline(always)]
    fn input_transform<const N: usize>(
        &self,
        c: usize,
        y0: usize,
        tx0: usize,
        t: &mut [[[f32; N]; TILE]; TILE],
        v: &mut [f32],
    ) {
        let p = self.phases;
        // Along each padded row first: t[r][k] = sum over the window's columns.
        for (r, tr) in t.iter_mut().enumerate() {
            let row = p.at(c, y0 + r, 0) + tx0;
            // Window column col of tile tx is phase col % 4 at position tx + col / 4.
            let d = |col: usize| lanes::<N>(self.input, row + (col % OUT) * p.width + col / OUT);
            let [o0, o1, o2, o3, o4, o5] = tr;
            bt(
                [d(0), d(1), d(2), d(3), d(4), d(5)],
                [o0, o1, o2, o3, o4, o5],
            );
        }
        self.transform_columns::<N>(c, t, v);
    }

    /// The second pass of the input transform: V[i][k] = B^T t[0..6][k], straight into row
    /// c of the 36 B panels in `v`.
    #[inline(always)]
    fn transform_columns<const N: usize>(
        &self,
        c: usize,
        t: &[[[f32; N]; TILE]; TILE],
        v: &mut [f32],
    ) {
        let ic = self.w.in_channels;
        #[allow(clippy::needless_range_loop)] // k picks a column of all six rows of t
        for k in 0..TILE {
            let at = |i: usize| (i * TILE + k) * panel_stride::<N>(ic) + c * N;
            let r = |i: usize| at(i)..at(i) + N;
            let Ok([o0, o1, o2, o3, o4, o5]) =
                v.get_disjoint_mut([r(0), r(1), r(2), r(3), r(4), r(5)])
            else {
                unreachable!("V rows of distinct positions are disjoint and inside V");
            };
            let out = [
                as_lanes(o0),
                as_lanes(o1),
                as_lanes(o2),
                as_lanes(o3),
                as_lanes(o4),
                as_lanes(o5),
            ];
            let col = |r: usize| &t[r][k];
            bt([col(0), col(1), col(2), col(3), col(4), col(5)], out);
        }
    }

    /// [`Self::input_transform`] for a block whose tiles lie in several runs (`segs`):
    /// each window column's N lanes are first gathered into `g`, CHUNK values at a time (a
    /// chunk past a run's end is overwritten by the next run's, or lies past the N lanes).
    #[inline(always)]
    fn input_transform_gathered<const N: usize>(
        &self,
        c: usize,
        segs: &[Segment],
        g: &mut [[f32; GATHER]; TILE],
        t: &mut [[[f32; N]; TILE]; TILE],
        v: &mut [f32],
    ) {
        let p = self.phases;
        for (r, tr) in t.iter_mut().enumerate() {
            for (col, gc) in g.iter_mut().enumerate() {
                for s in segs {
                    // Window column col of tile tx is phase col % 4 at position tx + col / 4.
                    let at = p.at(c, s.ty * OUT + r, col % OUT) + s.tx + col / OUT;
                    for k in (0..s.len).step_by(CHUNK) {
                        gc[s.lane + k..][..CHUNK].copy_from_slice(&self.input[at + k..][..CHUNK]);
                    }
                }
            }
            let d = |col: usize| -> &[f32; N] { g[col][..N].try_into().expect("N lanes") };
            let [o0, o1, o2, o3, o4, o5] = tr;
            bt(
                [d(0), d(1), d(2), d(3), d(4), d(5)],
                [o0, o1, o2, o3, o4, o5],
            );
        }
        self.transform_columns::<N>(c, t, v);
    }

    /// Writes output channel o's tiles of this block (its runs `segs`): act(tile + bias) +
    /// residual, clipped to the output. `avx`: AVX is available.
    #[inline(always)]
    fn store<const N: usize>(
        &self,
        o: usize,
        segs: &[Segment],
        tile: &mut [[[f32; N]; OUT]; OUT],
        avx: bool,
    ) {
        use activation::{clip, relu, sigmoid_fast};
        match self.act {
            None => self.store_with(o, segs, tile, avx, |v| v),
            Some(Activation::Relu) => self.store_with(o, segs, tile, avx, relu),
            Some(Activation::Clip { min, max }) => {
                self.store_with(o, segs, tile, avx, |v| clip(v, min, max))
            }
            Some(Activation::Sigmoid) => self.store_with(o, segs, tile, avx, sigmoid_fast),
        }
    }

    /// `tile[a][b]` holds row a, column b of every lane's 4x4 output tile.
    #[inline(always)]
    fn store_with<const N: usize>(
        &self,
        o: usize,
        segs: &[Segment],
        tile: &mut [[[f32; N]; OUT]; OUT],
        avx: bool,
        act: impl Fn(f32) -> f32,
    ) {
        let [oh, ow] = self.out_hw;
        let bias = self.bias[o];
        // One flat pass, which vectorizes; fused into the interleave it did not.
        for v in tile.as_flattened_mut().as_flattened_mut() {
            *v = act(*v + bias);
        }
        if self.pooled {
            self.store_pooled(o, segs, tile);
            return;
        }
        let mut row = [[0.0f32; OUT]; N];
        for (a, tile_row) in tile.iter().enumerate() {
            for s in segs {
                let y = s.ty * OUT + a;
                if y >= oh {
                    continue;
                }
                let x0 = s.tx * OUT;
                let width = (s.len * OUT).min(ow - x0);
                let at = (o * oh + y) * ow + x0;
                // SAFETY: this block alone writes its tiles' outputs: columns x0 .. x0 +
                // width of row y of every channel, and at + width <= (o * oh + y + 1) * ow
                // lies inside the output (`run` checked its size).
                let dst = unsafe { std::slice::from_raw_parts_mut(self.out.get().add(at), width) };
                if s.lane == 0 && width == N * OUT {
                    // SAFETY: dst holds exactly N * 4 f32s.
                    let dst = unsafe { &mut *dst.as_mut_ptr().cast::<[[f32; OUT]; N]>() };
                    interleave(tile_row, dst, avx);
                } else {
                    // The block's lanes once per output row, then each run's part.
                    if s.lane == segs[0].lane {
                        interleave(tile_row, &mut row, avx);
                    }
                    dst.copy_from_slice(&row.as_flattened()[s.lane * OUT..][..width]);
                }
                if let Some(r) = self.residual {
                    dst.iter_mut()
                        .zip(&r[at..at + width])
                        .for_each(|(v, &r)| *v += r);
                }
            }
        }
    }

    /// Output channel o's tiles of this block pooled 2x2 at stride 2 (after bias and
    /// activation, which commute with the max): each 4x4 tile gives 2x2 values, at pooled
    /// rows 2 ty, 2 ty + 1 and columns 2 tx, 2 tx + 1, clipped to the pooled output.
    #[inline(always)]
    fn store_pooled<const N: usize>(
        &self,
        o: usize,
        segs: &[Segment],
        tile: &[[[f32; N]; OUT]; OUT],
    ) {
        let [ph, pw] = self.out_hw;
        for i in 0..OUT / 2 {
            // The two pooled values of each lane's row i, side by side.
            let mut row = [[0.0f32; 2]; N];
            for (l, r) in row.iter_mut().enumerate() {
                let window = |j: usize| {
                    let (a, b) = (&tile[2 * i], &tile[2 * i + 1]);
                    nan_max(
                        nan_max(a[2 * j][l], a[2 * j + 1][l]),
                        nan_max(b[2 * j][l], b[2 * j + 1][l]),
                    )
                };
                *r = [window(0), window(1)];
            }
            let row = row.as_flattened();
            for s in segs {
                let y = s.ty * 2 + i;
                if y >= ph || s.tx * 2 >= pw {
                    continue;
                }
                let x0 = s.tx * 2;
                let width = (s.len * 2).min(pw - x0);
                let at = (o * ph + y) * pw + x0;
                // SAFETY: this block alone writes its tiles' pooled outputs: columns x0 ..
                // x0 + width of pooled row y of every channel, inside the output (`run`
                // checked its size).
                let dst = unsafe { std::slice::from_raw_parts_mut(self.out.get().add(at), width) };
                dst.copy_from_slice(&row[s.lane * 2..][..width]);
            }
        }
    }
}

/// The 4 columns of each lane's tile row side by side: row[l] = [vals[0][l], .., vals[3][l]].
/// The compiler's version of the plain loop inserted values one by one.
#[inline(always)]
pub(super) fn interleave<const N: usize>(
    vals: &[[f32; N]; OUT],
    row: &mut [[f32; OUT]; N],
    avx: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if avx && N.is_multiple_of(8) {
        // SAFETY: `avx` is set only on the AVX2 and AVX-512 paths, selected after detection.
        unsafe { interleave_avx(vals, row) };
        return;
    }
    let _ = avx;
    for (l, r) in row.iter_mut().enumerate() {
        *r = [vals[0][l], vals[1][l], vals[2][l], vals[3][l]];
    }
}

/// [`interleave`] as 4x8 transposes.
///
/// # Safety
/// AVX is available, and N is a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn interleave_avx<const N: usize>(vals: &[[f32; N]; OUT], row: &mut [[f32; OUT]; N]) {
    use std::arch::x86_64::*;
    for l0 in (0..N).step_by(8) {
        // SAFETY: AVX (the caller's contract); lanes l0 .. l0 + 8 exist in every row of
        // `vals` and `row` (N is a multiple of 8).
        unsafe {
            let r = |b: usize| _mm256_loadu_ps(vals[b][l0..].as_ptr());
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            // Per 128-bit half: t0 = r0[0] r1[0] r0[1] r1[1], t1 = r0[2] r1[2] r0[3] r1[3], ..
            let t0 = _mm256_unpacklo_ps(r0, r1);
            let t1 = _mm256_unpackhi_ps(r0, r1);
            let t2 = _mm256_unpacklo_ps(r2, r3);
            let t3 = _mm256_unpackhi_ps(r2, r3);
            // u_j holds lane j in its low half and lane j + 4 in its high half.
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let out = row[l0..].as_mut_ptr().cast::<f32>();
            _mm256_storeu_ps(out, _mm256_permute2f128_ps::<0x20>(u0, u1));
            _mm256_storeu_ps(out.add(8), _mm256_permute2f128_ps::<0x20>(u2, u3));
            _mm256_storeu_ps(out.add(16), _mm256_permute2f128_ps::<0x31>(u0, u1));
            _mm256_storeu_ps(out.add(24), _mm256_permute2f128_ps::<0x31>(u2, u3));
        }
    }
}

/// A slice of exactly N values as an array.
#[inline(always)]
fn as_lanes<const N: usize>(s: &mut [f32]) -> &mut [f32; N] {
    s.try_into().expect("exactly N values")
}

/// Distance between V's 36 B panels of [ic][N]: one row more than a panel, so that the
/// input transform's 36 stores per channel do not fall 2^k bytes apart into one L1 set.
#[inline(always)]
fn panel_stride<const N: usize>(ic: usize) -> usize {
    (ic + 1) * N
}

/// N values at `at` as an array.
#[inline(always)]
fn lanes<const N: usize>(s: &[f32], at: usize) -> &[f32; N] {
    s[at..at + N].try_into().expect("N values")
}

/// o = B^T d for 6 rows of N lanes.
#[inline(always)]
fn bt<const N: usize>(d: [&[f32; N]; TILE], o: [&mut [f32; N]; TILE]) {
    let [d0, d1, d2, d3, d4, d5] = d;
    let [o0, o1, o2, o3, o4, o5] = o;
    for l in 0..N {
        let [d0, d1, d2, d3, d4, d5] = [d0[l], d1[l], d2[l], d3[l], d4[l], d5[l]];
        o0[l] = 4.0 * d0 - 5.0 * d2 + d4;
        o1[l] = d3 + d4 - 4.0 * (d1 + d2);
        o2[l] = d4 - d3 + 4.0 * (d1 - d2);
        o3[l] = d4 - d2 + 2.0 * (d3 - d1);
        o4[l] = d4 - d2 + 2.0 * (d1 - d3);
        o5[l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
}

/// o = A^T m for 6 rows of N lanes.
#[inline(always)]
fn at<const N: usize>(m: [&[f32; N]; TILE], o: [&mut [f32; N]; OUT]) {
    let [m0, m1, m2, m3, m4, m5] = m;
    let [o0, o1, o2, o3] = o;
    for l in 0..N {
        let [m0, m1, m2, m3, m4, m5] = [m0[l], m1[l], m2[l], m3[l], m4[l], m5[l]];
        o0[l] = m0 + m1 + m2 + m3 + m4;
        o1[l] = (m1 - m2) + 2.0 * (m3 - m4);
        o2[l] = (m1 + m2) + 4.0 * (m3 + m4);
        o3[l] = (m1 - m2) + 8.0 * (m3 - m4) + m5;
    }
}

/// A^T M A of output channel o for N tiles; M's 36 positions (i * 6 + k) are rows
/// `(o * 36 + pos) * N` of `m`. `tile[a][b]` gets row a, column b of each lane's tile;
/// `s` holds the first pass.
#[inline(always)]
fn output_transform<const N: usize>(
    m: &[f32],
    o: usize,
    s: &mut [[[f32; N]; OUT]; TILE],
    tile: &mut [[[f32; N]; OUT]; OUT],
) {
    let row = |pos: usize| lanes::<N>(m, (o * POS + pos) * N);
    // Along each row i first: s[i][b].
    for (i, si) in s.iter_mut().enumerate() {
        let p = i * TILE;
        let [o0, o1, o2, o3] = si;
        let rows = [
            row(p),
            row(p + 1),
            row(p + 2),
            row(p + 3),
            row(p + 4),
            row(p + 5),
        ];
        at(rows, [o0, o1, o2, o3]);
    }
    // Then down the columns: column b of the tile from s[0..6][b].
    let [t0, t1, t2, t3] = tile;
    for b in 0..OUT {
        let col = |i: usize| &s[i][b];
        let out = [&mut t0[b], &mut t1[b], &mut t2[b], &mut t3[b]];
        at([col(0), col(1), col(2), col(3), col(4), col(5)], out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    /// Direct 3x3 stride-1 convolution in f64.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        [ic, ih, iw]: [usize; 3],
        oc: usize,
        [pt, pl]: [usize; 2],
        [oh, ow]: [usize; 2],
    ) -> Vec<f32> {
        let mut out = vec![0.0f32; oc * oh * ow];
        for o in 0..oc {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut s = bias[o] as f64;
                    for c in 0..ic {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (
                                    (y + ky) as isize - pt as isize,
                                    (xo + kx) as isize - pl as isize,
                                );
                                if iy >= 0 && ix >= 0 && (iy as usize) < ih && (ix as usize) < iw {
                                    s += x[(c * ih + iy as usize) * iw + ix as usize] as f64
                                        * w[((o * ic + c) * 3 + ky) * 3 + kx] as f64;
                                }
                            }
                        }
                    }
                    out[(o * oh + y) * ow + xo] = s as f32;
                }
            }
        }
        out
    }

    /// Random sizes, pads, activations and residuals, at 1 and 2 threads: every tile position
    /// (partial tiles at the bottom and right, partial panels) against the direct sum.
    #[test]
    fn matches_direct_convolution() {
        let mut rng = rand::rng();
        for case in 0..24 {
            let (ic, oc) = (rng.random_range(1..=20), rng.random_range(1..=20));
            let (ih, iw) = (rng.random_range(1..=14), rng.random_range(1..=90));
            let pads: [usize; 4] = std::array::from_fn(|_| rng.random_range(0..=2));
            let (oh, ow) = (ih + pads[0] + pads[2], iw + pads[1] + pads[3]);
            if oh < 3 || ow < 3 {
                continue;
            }
            let (oh, ow) = (oh - 2, ow - 2);
            let rw = ResolvedWindow {
                kernel: vec![3, 3],
                strides: vec![1, 1],
                dilations: vec![1, 1],
                pads_begin: vec![pads[0], pads[1]],
                pads_end: vec![pads[2], pads[3]],
                output: vec![oh, ow],
            };
            let rand = |n: usize, rng: &mut rand::rngs::ThreadRng| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
            };
            let x = rand(ic * ih * iw, &mut rng);
            let w = rand(oc * ic * 9, &mut rng);
            let bias = rand(oc, &mut rng);
            let residual = (case % 2 == 1).then(|| rand(oc * oh * ow, &mut rng));
            let mut want = direct(
                &x,
                &w,
                &bias,
                [ic, ih, iw],
                oc,
                [pads[0], pads[1]],
                [oh, ow],
            );
            let act = [
                None,
                Some(Activation::Relu),
                Some(Activation::Clip {
                    min: -0.5,
                    max: 0.5,
                }),
                Some(Activation::Sigmoid),
            ][case % 4];
            // Winograd's rounding error follows the convolution's magnitude, which a clipped
            // or sigmoid output no longer shows: the tolerance is relative to the sums
            // before the activation (a Clip to 0.5 had let a 7e-5 error on sums of ~4 fail).
            let sums = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            if let Some(a) = act {
                activation::apply_slice(a, &mut want);
            }
            if let Some(r) = &residual {
                want.iter_mut().zip(r).for_each(|(v, r)| *v += r);
            }
            let kernel = Winograd::new(&w, oc, ic);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut got = vec![f32::NAN; oc * oh * ow];
                pool.install(|| {
                    kernel.run(
                        &x,
                        [ih, iw],
                        &rw,
                        &bias,
                        act,
                        residual.as_deref(),
                        false,
                        &mut got,
                    )
                });
                let scale = want.iter().fold(sums, |m, v| m.max(v.abs()));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * scale,
                        "case {case}: x [{ic}, {ih}, {iw}] -> {oc}, pads {pads:?}, {threads} threads: [{i}] {g} vs {w}"
                    );
                }
            }
        }
    }
}
