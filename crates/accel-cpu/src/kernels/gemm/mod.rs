//! Packed single-precision GEMM: C = A·B with a fused epilogue (bias, activation, residual).
//!
//! A is packed into panels of `mr` rows and B into panels of `nr` columns, each panel laid out
//! k-major so the micro-kernel streams both linearly. Weights are packed once at compile
//! time; activations are packed per call, or each B panel is built right before use (`conv`'s
//! im2col, or gathered from a padded image: [`ImplicitB`]). The register tile depends on the
//! ISA chosen at start ([`Blocking`]): 8 x 32 on AVX-512F (16 zmm accumulators,
//! hand-written), 6 x 16 on AVX2+FMA (hand-written, the epilogue on the registers) and on
//! the portable path (plain Rust over fixed-size arrays that the compiler keeps in vector
//! registers: 24 NEON registers on aarch64).

use super::SyncPtr;
use crate::isa::{self, Isa};
use crate::scratch::Scratch;
use accel_core::ir::Activation;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Register tile of the micro-kernel: C is computed in `mr` x `nr` blocks, A is packed in
/// panels of `mr` rows and B in panels of `nr` columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub mr: usize,
    pub nr: usize,
}

/// The largest `mr * nr` of any ISA, for the stack tile.
const MAX_TILE: usize = 8 * 32;

impl Blocking {
    pub fn of(isa: Isa) -> Blocking {
        match isa {
            Isa::Avx512 => Blocking { mr: 8, nr: 32 },
            Isa::Avx2Fma | Isa::Portable => Blocking { mr: 6, nr: 16 },
        }
    }

    /// The blocking of the active ISA; every packed matrix of this process uses it.
    pub fn active() -> Blocking {
        Blocking::of(isa::active())
    }
}

/// Packed values: f32, or f16 to halve the memory weights take (`Precision::F16`), widened
/// panel by panel right before the micro-kernel reads them.
#[derive(Clone, Debug)]
enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// Activations packed per run, in a buffer from the scratch pool.
    Pooled(Scratch),
}

impl Store {
    fn bytes(&self) -> usize {
        match self {
            Store::F32(v) => v.len() * 4,
            Store::F16(v) => v.len() * 2,
            Store::Pooled(v) => v.len() * 4,
        }
    }

    fn to_f16(&self) -> Store {
        match self {
            Store::F32(v) => Store::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            Store::Pooled(v) => Store::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            Store::F16(v) => Store::F16(v.clone()),
        }
    }

    /// Values `range` as f32: borrowed, or widened into `scratch`.
    fn slice<'a>(&'a self, range: std::ops::Range<usize>, scratch: &'a mut Scratch) -> &'a [f32] {
        match self {
            Store::F32(v) => &v[range],
            Store::Pooled(v) => &v[range],
            Store::F16(v) => {
                let wide = scratch.reset_zeroed(range.len());
                v[range].convert_to_f32_slice(wide);
                wide
            }
        }
    }
}

/// A packed as ceil(m/mr) panels of [k][mr], zero-padded past m.
#[derive(Clone, Debug)]
pub struct PackedA {
    pub m: usize,
    pub k: usize,
    mr: usize,
    data: Store,
}

/// B packed as ceil(n/nr) panels of [k][nr], zero-padded past n.
#[derive(Clone, Debug)]
pub struct PackedB {
    pub k: usize,
    pub n: usize,
    nr: usize,
    data: Store,
}

impl PackedA {
    /// Packs A where element (i, p) is `a[i * rs + p * cs]`.
    pub fn pack(a: &[f32], m: usize, k: usize, rs: usize, cs: usize) -> PackedA {
        let mr = Blocking::active().mr;
        let mut data = vec![0.0; m.div_ceil(mr) * k * mr];
        pack_a_into(a, m, k, rs, cs, mr, &mut data);
        PackedA {
            m,
            k,
            mr,
            data: Store::F32(data),
        }
    }

    /// [`PackedA::pack`] into a buffer from the scratch pool: for activations packed per run.
    pub fn pack_pooled(a: &[f32], m: usize, k: usize, rs: usize, cs: usize) -> PackedA {
        let mr = Blocking::active().mr;
        let mut data = Scratch::zeroed(m.div_ceil(mr) * k * mr);
        pack_a_into(a, m, k, rs, cs, mr, &mut data);
        PackedA {
            m,
            k,
            mr,
            data: Store::Pooled(data),
        }
    }

    /// The same matrix held as f16 (weights rounded to the nearest f16).
    pub fn to_f16(&self) -> PackedA {
        PackedA {
            data: self.data.to_f16(),
            ..*self
        }
    }

    /// Bytes held by the packed panels.
    pub fn bytes(&self) -> usize {
        self.data.bytes()
    }

    fn panel<'a>(&'a self, i: usize, scratch: &'a mut Scratch) -> &'a [f32] {
        let len = self.k * self.mr;
        self.data.slice(i * len..(i + 1) * len, scratch)
    }
}

/// Panels of `mr` rows of A into zeroed `data`.
fn pack_a_into(a: &[f32], m: usize, k: usize, rs: usize, cs: usize, mr: usize, data: &mut [f32]) {
    if k == 0 {
        return;
    }
    for (pi, panel) in data.chunks_exact_mut(k * mr).enumerate() {
        for i in 0..mr.min(m - pi * mr) {
            let row = pi * mr + i;
            for p in 0..k {
                panel[p * mr + i] = a[row * rs + p * cs];
            }
        }
    }
}

impl PackedB {
    /// Packs B where element (p, j) is `b[p * rs + j * cs]`.
    pub fn pack(b: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> PackedB {
        let nr = Blocking::active().nr;
        let mut data = vec![0.0f32; n.div_ceil(nr) * k * nr];
        if k > 0 {
            data.par_chunks_exact_mut(k * nr)
                .enumerate()
                .for_each(|(pj, panel)| {
                    let cols = nr.min(n - pj * nr);
                    for p in 0..k {
                        let dst = &mut panel[p * nr..p * nr + cols];
                        if cs == 1 {
                            let at = p * rs + pj * nr;
                            dst.copy_from_slice(&b[at..at + cols]);
                        } else {
                            for (j, d) in dst.iter_mut().enumerate() {
                                *d = b[p * rs + (pj * nr + j) * cs];
                            }
                        }
                    }
                });
        }
        PackedB {
            k,
            n,
            nr,
            data: Store::F32(data),
        }
    }

    /// The same matrix held as f16 (weights rounded to the nearest f16).
    pub fn to_f16(&self) -> PackedB {
        PackedB {
            data: self.data.to_f16(),
            ..*self
        }
    }

    pub fn bytes(&self) -> usize {
        self.data.bytes()
    }

    fn panel<'a>(&'a self, j: usize, scratch: &'a mut Scratch) -> &'a [f32] {
        let len = self.k * self.nr;
        self.data.slice(j * len..(j + 1) * len, scratch)
    }
}

/// Bias added before the activation.
#[derive(Clone, Copy, Debug)]
pub enum Bias<'a> {
    None,
    /// One value per row of C (conv output channels).
    Row(&'a [f32]),
    /// One value per column of C (dense layer units).
    Col(&'a [f32]),
}

/// What happens to a tile of C on its way out: `act(acc + bias) + residual`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub bias: Bias<'a>,
    pub activation: Option<Activation>,
    /// A tensor laid out like C (same `ldc`) added last: a residual connection's skip input.
    pub residual: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: Bias::None,
        activation: None,
        residual: None,
    };
}

/// acc (mr x nr, row-major) = A panel · B panel over k: the portable micro-kernel, plain
/// Rust over fixed-size arrays that the compiler keeps in vector registers.
#[inline(always)]
fn tile_generic<const MR: usize, const NR: usize, const FMA: bool>(
    k: usize,
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    let mut acc = [[0.0f32; NR]; MR];
    for (av, bv) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(k) {
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] = if FMA {
                    av[i].mul_add(bv[j], acc[i][j])
                } else {
                    av[i] * bv[j] + acc[i][j]
                };
            }
        }
    }
    for (o, row) in out.chunks_exact_mut(NR).zip(&acc) {
        o.copy_from_slice(row);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// A hand-written register tile: accumulators, the micro-kernel and the epilogue on the
/// registers, for [`ColumnTiles::run_packed`]. Every method requires the tile's ISA and is
/// inlined into a caller compiled with it.
#[cfg(target_arch = "x86_64")]
trait RegisterTile {
    type Acc;
    const MR: usize;
    const NR: usize;
    /// # Safety
    /// The tile's ISA is available.
    unsafe fn zeros() -> Self::Acc;
    /// `c` + the first `rows` rows of A panel `a` (k x MR) times B panel `b` (k x NR).
    ///
    /// # Safety
    /// The tile's ISA is available; `a` holds k * MR values and `b` k * NR.
    unsafe fn tile_from(
        rows: usize,
        k: usize,
        a: *const f32,
        b: *const f32,
        c: Self::Acc,
    ) -> Self::Acc;
    /// # Safety
    /// The tile's ISA is available.
    unsafe fn spill(c: &Self::Acc, out: &mut [f32]);
    /// # Safety
    /// The tile's ISA is available.
    unsafe fn reload(from: &[f32]) -> Self::Acc;
    /// Whether a B panel larger than L1 is run in slices of k across all tiles
    /// ([`ColumnTiles::depth_chunk`]) rather than whole, tile by tile, from L2.
    const SLICE_K: bool;
    /// Whether [`RegisterTile::store`] takes this epilogue for tiles `cols` wide.
    fn stores(ep: &Epilogue, cols: usize) -> bool;
    /// `[rows, cols]` of the tile into C at `out` (row stride `ldc`), through the epilogue.
    ///
    /// # Safety
    /// The tile's ISA is available; that part of C (and of the residual, and the bias at
    /// `[row0, col0]`) is in bounds and the caller's alone.
    #[allow(clippy::too_many_arguments)]
    unsafe fn store(
        size: [usize; 2],
        c: &Self::Acc,
        out: *mut f32,
        ldc: usize,
        at: [usize; 2],
        ep: &Epilogue,
        residual: Option<*const f32>,
    );
}

#[cfg(target_arch = "x86_64")]
struct Avx2Tile;

#[cfg(target_arch = "x86_64")]
impl RegisterTile for Avx2Tile {
    type Acc = [std::arch::x86_64::__m256; 12];
    const MR: usize = avx2::MR;
    const NR: usize = avx2::NR;
    const SLICE_K: bool = true;
    #[inline(always)]
    unsafe fn zeros() -> Self::Acc {
        // SAFETY: the caller's contract.
        unsafe { avx2::zeros() }
    }
    #[inline(always)]
    unsafe fn tile_from(
        rows: usize,
        k: usize,
        a: *const f32,
        b: *const f32,
        c: Self::Acc,
    ) -> Self::Acc {
        // SAFETY: the caller's contract.
        unsafe { avx2::tile_from(rows, k, a, b, c) }
    }
    #[inline(always)]
    unsafe fn spill(c: &Self::Acc, out: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { avx2::spill(c, out) }
    }
    #[inline(always)]
    unsafe fn reload(from: &[f32]) -> Self::Acc {
        // SAFETY: the caller's contract.
        unsafe { avx2::reload(from) }
    }
    fn stores(ep: &Epilogue, cols: usize) -> bool {
        avx2::in_registers(ep) && cols == avx2::NR
    }
    #[inline(always)]
    unsafe fn store(
        [rows, _]: [usize; 2],
        c: &Self::Acc,
        out: *mut f32,
        ldc: usize,
        at: [usize; 2],
        ep: &Epilogue,
        residual: Option<*const f32>,
    ) {
        // SAFETY: the caller's contract; `stores` admitted only whole-width tiles.
        unsafe { avx2::store_full(rows, c, out, ldc, at, ep, residual) }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx512Tile;

#[cfg(target_arch = "x86_64")]
impl RegisterTile for Avx512Tile {
    type Acc = [std::arch::x86_64::__m512; 16];
    const MR: usize = avx512::MR;
    const NR: usize = avx512::NR;
    // On Zen 4, slicing cost 2-4% at one thread (the CRNN's dense layer, k = 768, and the
    // U-Net's up1, k = 320): the 8 x 32 tile does twice the work per B line of the AVX2 one,
    // so L2 keeps up, and the sliced path spills and reloads 16 zmm per tile and slice.
    const SLICE_K: bool = false;
    #[inline(always)]
    unsafe fn zeros() -> Self::Acc {
        // SAFETY: the caller's contract.
        unsafe { avx512::zeros() }
    }
    #[inline(always)]
    unsafe fn tile_from(
        rows: usize,
        k: usize,
        a: *const f32,
        b: *const f32,
        c: Self::Acc,
    ) -> Self::Acc {
        // SAFETY: the caller's contract.
        unsafe { avx512::tile_from(rows, k, a, b, c) }
    }
    #[inline(always)]
    unsafe fn spill(c: &Self::Acc, out: &mut [f32]) {
        // SAFETY: the caller's contract.
        unsafe { avx512::spill(c, out) }
    }
    #[inline(always)]
    unsafe fn reload(from: &[f32]) -> Self::Acc {
        // SAFETY: the caller's contract.
        unsafe { avx512::reload(from) }
    }
    fn stores(ep: &Epilogue, _cols: usize) -> bool {
        avx512::in_registers(ep)
    }
    #[inline(always)]
    unsafe fn store(
        [rows, cols]: [usize; 2],
        c: &Self::Acc,
        out: *mut f32,
        ldc: usize,
        at: [usize; 2],
        ep: &Epilogue,
        residual: Option<*const f32>,
    ) {
        // SAFETY: the caller's contract.
        unsafe { avx512::store(rows, cols, c, out, ldc, at, ep, residual) }
    }
}

/// C (m x n, row stride ldc) = A·B, then the epilogue. Tiles are spread over the current
/// rayon pool.
pub fn gemm(a: &PackedA, b: &PackedB, c: &mut [f32], ldc: usize, ep: Epilogue) {
    assert_eq!(a.k, b.k, "gemm: inner dimensions differ");
    gemm_panels(
        a,
        Columns::Uniform { n: b.n },
        PanelSource::Packed(b),
        c,
        ldc,
        ep,
    );
}

/// C = A·B where B's column panels are produced on demand by `fill(panel_index, panel)` into
/// a [k][nr] buffer (`nr` from [`Blocking::active`]) of stale values, every one of which
/// `fill` must write (zeros past n included), right before use: the panel is
/// hot in L1 for every A panel, and no k x n copy of B is ever materialised (convolution's
/// im2col works this way).
pub fn gemm_fill_b(
    a: &PackedA,
    n: usize,
    fill: &(dyn Fn(usize, &mut [f32]) + Sync),
    c: &mut [f32],
    ldc: usize,
    ep: Epilogue,
) {
    gemm_panels(
        a,
        Columns::Uniform { n },
        PanelSource::Fill(fill),
        c,
        ldc,
        ep,
    );
}

/// B gathered from an image laid out in rows, as a convolution sees its padded input (see
/// `conv`, which splits the rows into stride phases so this holds at any stride):
/// B[p][(y, x)] = `data[y * row_stride + x + offsets[p]]` for `rows` rows of `width`
/// columns, C's column (y, x) being `y * width + x`. Each image row is cut into column
/// panels of its own, so every row of a panel is one contiguous run of `data`: a panel is
/// `k` fixed-size copies right before use (im2col without its index arithmetic). The last
/// panel of a row is partial when `nr` does not divide `width`; its values past the row come
/// from the next one and are never stored, and past the end of `data` they are zero.
///
/// Reading the rows in place instead (no copy) was measured slower on the CRNN's conv2:
/// probably because an unaligned row of 16 floats straddles two cache lines about half the
/// time, so the panel's footprint grows by half, while a copied panel is dense and hot in L1
/// for the panel's many row tiles. With at most two row tiles per panel the copy costs as
/// much as the tiles, and `gemm_panels` has the AVX2 kernel read the rows in place.
/// `max_offset` is the largest of `offsets`: the in-place read relies on it.
pub struct ImplicitB<'a> {
    data: &'a [f32],
    offsets: &'a [usize],
    max_offset: usize,
    rows: usize,
    width: usize,
    row_stride: usize,
}

impl<'a> ImplicitB<'a> {
    pub fn new(
        data: &'a [f32],
        offsets: &'a [usize],
        rows: usize,
        width: usize,
        row_stride: usize,
    ) -> ImplicitB<'a> {
        ImplicitB {
            data,
            offsets,
            max_offset: offsets.iter().max().copied().unwrap_or(0),
            rows,
            width,
            row_stride,
        }
    }

    /// Copies the panel at `base` into `panel` ([k][nr]), every value: zero past `data`.
    fn copy_panel(&self, base: usize, nr: usize, panel: &mut [f32]) {
        fn whole<const N: usize>(data: &[f32], base: usize, offsets: &[usize], panel: &mut [f32]) {
            for (dst, &off) in panel.chunks_exact_mut(N).zip(offsets) {
                let dst: &mut [f32; N] = dst.try_into().expect("panel row");
                *dst = data[base + off..base + off + N].try_into().expect("row");
            }
        }
        if base + self.max_offset + nr <= self.data.len() {
            // Fixed-size rows: a memcpy call per 64-byte row would cost more than the copy.
            match nr {
                16 => return whole::<16>(self.data, base, self.offsets, panel),
                32 => return whole::<32>(self.data, base, self.offsets, panel),
                _ => {}
            }
        }
        for (dst, &off) in panel.chunks_exact_mut(nr).zip(self.offsets) {
            let src = self.data.get(base + off..).unwrap_or(&[]);
            let n = nr.min(src.len());
            dst[..n].copy_from_slice(&src[..n]);
            dst[n..].fill(0.0);
        }
    }
}

/// C (m x rows*width, row stride ldc) = A·B for B gathered panel by panel ([`ImplicitB`]).
pub fn gemm_implicit(a: &PackedA, b: &ImplicitB, c: &mut [f32], ldc: usize, ep: Epilogue) {
    assert_eq!(a.k, b.offsets.len(), "gemm: inner dimensions differ");
    let columns = Columns::Rows {
        rows: b.rows,
        width: b.width,
    };
    gemm_panels(a, columns, PanelSource::Implicit(b), c, ldc, ep);
}

/// C (m x cols, row stride ldc) = A · one B panel already in packed layout ([k][nr], `nr`
/// from [`Blocking::active`]; its columns past `cols` are ignored), on the calling thread:
/// for kernels that run many small products inside their own parallel loop (Winograd's 36
/// per block of tiles).
pub fn gemm_panel(
    a: &PackedA,
    b_panel: &[f32],
    cols: usize,
    c: &mut [f32],
    ldc: usize,
    ep: Epilogue,
) {
    gemm_panel_rows(a, 0..a.m, b_panel, cols, c, ldc, ep)
}

/// [`gemm_panel`] for rows `rows` of A and C only (C still indexed from row 0), so that
/// tasks can share one product by rows. `rows.start` is a multiple of [`Blocking::mr`] and
/// `rows.end` one too, or `m`.
pub fn gemm_panel_rows(
    a: &PackedA,
    rows: std::ops::Range<usize>,
    b_panel: &[f32],
    cols: usize,
    c: &mut [f32],
    ldc: usize,
    ep: Epilogue,
) {
    let isa = isa::active();
    let Blocking { mr, nr } = Blocking::of(isa);
    assert_eq!(a.mr, mr, "gemm: A was packed for another ISA");
    assert!(cols <= nr, "gemm: more columns than a panel holds");
    assert!(b_panel.len() >= a.k * nr, "gemm: B panel too short");
    assert!(
        rows.start.is_multiple_of(mr)
            && (rows.end.is_multiple_of(mr) || rows.end == a.m)
            && rows.end <= a.m,
        "gemm: rows {rows:?} do not start and end on row tiles"
    );
    if rows.is_empty() || cols == 0 {
        return;
    }
    check_c(a.m, cols, c, ldc, &ep);
    let job = ColumnTiles {
        a,
        b_panel,
        b_rows: None,
        col0: 0,
        cols,
        tiles: rows.start / mr..rows.end.div_ceil(mr),
        c: SyncPtr(c.as_mut_ptr()),
        ldc,
        ep,
    };
    job.run(isa);
}

/// C, the residual and the bias cover an m x n product with row stride ldc.
fn check_c(m: usize, n: usize, c: &[f32], ldc: usize, ep: &Epilogue) {
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: C is too small");
    if let Some(res) = ep.residual {
        assert!(
            res.len() >= (m - 1) * ldc + n,
            "gemm: the residual is too small"
        );
    }
    match ep.bias {
        Bias::Row(b) => assert!(b.len() >= m, "gemm: row bias too short"),
        Bias::Col(b) => assert!(b.len() >= n, "gemm: column bias too short"),
        Bias::None => {}
    }
}

enum PanelSource<'a> {
    Packed(&'a PackedB),
    Fill(&'a (dyn Fn(usize, &mut [f32]) + Sync)),
    Implicit(&'a ImplicitB<'a>),
}

/// How column panels map onto C's columns.
#[derive(Clone, Copy)]
enum Columns {
    /// Panel j holds columns j*nr .. min((j+1)*nr, n).
    Uniform { n: usize },
    /// `rows` rows of `width` columns, each row cut into panels of its own.
    Rows { rows: usize, width: usize },
}

impl Columns {
    fn n(self) -> usize {
        match self {
            Columns::Uniform { n } => n,
            Columns::Rows { rows, width } => rows * width,
        }
    }

    fn panels(self, nr: usize) -> usize {
        match self {
            Columns::Uniform { n } => n.div_ceil(nr),
            Columns::Rows { rows, width } => rows * width.div_ceil(nr),
        }
    }

    /// Panel j's (row, first column within the row, first column of C, columns).
    fn panel(self, j: usize, nr: usize) -> (usize, usize, usize, usize) {
        match self {
            Columns::Uniform { n } => (0, j * nr, j * nr, nr.min(n - j * nr)),
            Columns::Rows { width, .. } => {
                let per_row = width.div_ceil(nr);
                let (y, x0) = (j / per_row, j % per_row * nr);
                (y, x0, y * width + x0, nr.min(width - x0))
            }
        }
    }
}

fn gemm_panels(
    a: &PackedA,
    columns: Columns,
    src: PanelSource,
    c: &mut [f32],
    ldc: usize,
    ep: Epilogue,
) {
    let (m, k, n) = (a.m, a.k, columns.n());
    if m == 0 || n == 0 {
        return;
    }
    check_c(m, n, c, ldc, &ep);
    let isa = isa::active();
    let Blocking { mr, nr } = Blocking::of(isa);
    assert_eq!(a.mr, mr, "gemm: A was packed for another ISA");
    if let PanelSource::Packed(b) = &src {
        assert_eq!(b.nr, nr, "gemm: B was packed for another ISA");
    }
    let (mp, np) = (m.div_ceil(mr), columns.panels(nr));
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && m * n * k >= 1 << 15;
    // Few column panels (small images, ConvTranspose's first layers): split the rows too, so
    // every thread has work. A filled panel is then filled once per row chunk.
    let row_chunks = if parallel && np < 2 * threads {
        (2 * threads).div_ceil(np).min(mp)
    } else {
        1
    };
    let rows_per_chunk = mp.div_ceil(row_chunks);
    // With one or two tiles per panel (the U-Net's projections to 8 channels, its last
    // ConvTranspose with 9 rows), copying a panel costs about as much as the tiles using it:
    // the AVX2 kernel then reads B's rows in place.
    let direct = isa == Isa::Avx2Fma && mp <= DIRECT_MAX_TILES;
    let c_ptr = SyncPtr(c.as_mut_ptr());
    let task = |t: usize, scratch: &mut Scratch| {
        let (tj, chunk) = (t / row_chunks, t % row_chunks);
        let (y, x0, col0, cols) = columns.panel(tj, nr);
        let mut b_rows = None;
        let b_panel: &[f32] = match &src {
            PanelSource::Packed(b) => b.panel(tj, scratch),
            PanelSource::Fill(fill) => {
                // A zeroing pass here cost 4% of a U-Net run: the panel outgrows L1.
                let panel = scratch.reset_for_overwrite(k * nr);
                fill(tj, panel);
                panel
            }
            PanelSource::Implicit(b) => {
                let base = y * b.row_stride + x0;
                if direct && cols == nr && base + b.max_offset + nr <= b.data.len() {
                    b_rows = Some((b.offsets, b.max_offset));
                    &b.data[base..]
                } else {
                    let panel = scratch.reset_for_overwrite(k * nr);
                    b.copy_panel(base, nr, panel);
                    panel
                }
            }
        };
        let job = ColumnTiles {
            a,
            b_panel,
            b_rows,
            col0,
            cols,
            tiles: chunk * rows_per_chunk..((chunk + 1) * rows_per_chunk).min(mp),
            c: c_ptr,
            ldc,
            ep,
        };
        job.run(isa);
    };
    let tasks = np * row_chunks;
    if parallel && tasks >= 2 {
        (0..tasks)
            .into_par_iter()
            .for_each_init(Scratch::new, |scratch, t| task(t, scratch));
    } else {
        let mut scratch = Scratch::new();
        (0..tasks).for_each(|t| task(t, &mut scratch));
    }
}

/// Most row tiles for which B is read in place (see `gemm_panels`).
const DIRECT_MAX_TILES: usize = 2;

/// Tiles `tiles` of one column panel: micro-kernel, then bias, activation and residual on
/// the way to C. Compiled once per ISA so the epilogue is vectorized as wide as the
/// micro-kernel.
struct ColumnTiles<'a> {
    a: &'a PackedA,
    /// B's column panel, [k][nr]; or, with `b_rows` (AVX2 only), B in place, row p's nr
    /// values at `b_rows.0[p]`, none past `b_rows.1`.
    b_panel: &'a [f32],
    b_rows: Option<(&'a [usize], usize)>,
    /// First column of C and number of columns this panel covers.
    col0: usize,
    cols: usize,
    tiles: std::ops::Range<usize>,
    c: SyncPtr,
    ldc: usize,
    ep: Epilogue<'a>,
}

impl ColumnTiles<'_> {
    fn run(&self, isa: Isa) {
        assert!(
            self.b_rows.is_none() || isa == Isa::Avx2Fma,
            "gemm: B in place is for the AVX2 kernel"
        );
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::Avx512 is only selected after runtime detection of avx512f.
            Isa::Avx512 => unsafe { self.run_avx512() },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::Avx2Fma is only selected after runtime detection of avx2 and fma.
            Isa::Avx2Fma => unsafe { self.run_avx2() },
            _ => self.run_portable(),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn run_avx512(&self) {
        self.run_packed::<Avx512Tile>()
    }

    fn run_portable(&self) {
        const FMA: bool = cfg!(target_arch = "aarch64");
        self.run_generic(16, tile_generic::<6, 16, FMA>)
    }

    /// Tiles through a micro-kernel that writes a row-major mr x nr accumulator array, then
    /// the scalar epilogue ([`store_row`]).
    #[inline(always)]
    fn run_generic(&self, nr: usize, micro: impl Fn(usize, &[f32], &[f32], &mut [f32])) {
        let (a, m, k, mr) = (self.a, self.a.m, self.a.k, self.a.mr);
        let mut acc = [0.0f32; MAX_TILE];
        let mut a_scratch = Scratch::new();
        for ti in self.tiles.clone() {
            self.prefetch_c(ti);
            micro(
                k,
                a.panel(ti, &mut a_scratch),
                self.b_panel,
                &mut acc[..mr * nr],
            );
            self.store_rows(ti * mr, mr.min(m - ti * mr), nr, &acc);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self) {
        let (a, k) = (self.a, self.a.k);
        let (mr, nr) = (avx2::MR, avx2::NR);
        let mut a_scratch = Scratch::new();
        let rows = |ti: usize| mr.min(a.m - ti * mr);
        if let Some((b_rows, max_offset)) = self.b_rows {
            assert!(b_rows.len() >= k, "gemm: too few B rows");
            debug_assert!(b_rows[..k].iter().all(|&o| o <= max_offset));
            assert!(
                self.b_panel.len() >= max_offset + nr,
                "gemm: B rows outside B"
            );
            for ti in self.tiles.clone() {
                self.prefetch_c(ti);
                let panel = a.panel(ti, &mut a_scratch);
                assert!(panel.len() >= k * mr);
                // SAFETY: avx2 and fma are enabled here; the A panel holds k * mr values,
                // b_rows k offsets, and nr values from each lie inside B (asserted).
                unsafe {
                    let (pa, pb, po) = (panel.as_ptr(), self.b_panel.as_ptr(), b_rows.as_ptr());
                    let c = avx2::tile_from_rows(rows(ti), k, pa, pb, po, avx2::zeros());
                    self.finish::<Avx2Tile>(ti, &c);
                }
            }
            return;
        }
        self.run_packed::<Avx2Tile>()
    }

    /// The tiles of a packed B panel through register tile T: all of k at once when the
    /// panel fits in L1, else in slices of k across all tiles (see [`Self::depth_chunk`]).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn run_packed<T: RegisterTile>(&self) {
        let (a, k) = (self.a, self.a.k);
        let (mr, nr) = (T::MR, T::NR);
        let mut a_scratch = Scratch::new();
        let rows = |ti: usize| mr.min(a.m - ti * mr);
        assert!(self.b_panel.len() >= k * nr, "gemm: B panel too short");
        let b = self.b_panel.as_ptr();
        let kc = if T::SLICE_K { self.depth_chunk() } else { k };
        if kc >= k {
            for ti in self.tiles.clone() {
                self.prefetch_c(ti);
                let panel = a.panel(ti, &mut a_scratch);
                assert!(panel.len() >= k * mr);
                // SAFETY: T's ISA is enabled in the caller; the A panel holds k * mr values
                // and the B panel k * nr (asserted).
                unsafe {
                    let c = T::tile_from(rows(ti), k, panel.as_ptr(), b, T::zeros());
                    self.finish::<T>(ti, &c);
                }
            }
            return;
        }
        // Slices of k across all tiles, so that one slice of the B panel stays in L1 while
        // the tiles go by; partial sums wait in `partial`.
        let tile_len = mr * nr;
        let mut partial = Scratch::zeroed(self.tiles.len() * tile_len);
        for k0 in (0..k).step_by(kc) {
            let kk = kc.min(k - k0);
            let last = k0 + kk == k;
            for (t, ti) in self.tiles.clone().enumerate() {
                if last {
                    self.prefetch_c(ti);
                }
                let panel = a.panel(ti, &mut a_scratch);
                assert!(panel.len() >= k * mr);
                let sums = &mut partial[t * tile_len..][..tile_len];
                // SAFETY: T's ISA is enabled in the caller; k0 + kk <= k rows of the A panel
                // (k * mr values) and of the B panel (k * nr, asserted).
                unsafe {
                    let init = if k0 == 0 { T::zeros() } else { T::reload(sums) };
                    let (pa, pb) = (panel[k0 * mr..].as_ptr(), b.add(k0 * nr));
                    let c = T::tile_from(rows(ti), kk, pa, pb, init);
                    if last {
                        self.finish::<T>(ti, &c);
                    } else {
                        T::spill(&c, sums);
                    }
                }
            }
        }
    }

    /// Asks for tile ti's lines of C for writing, a tile's worth of compute before they are
    /// stored: C rows are whole planes apart, too many streams for the hardware prefetchers,
    /// and each store would otherwise wait for its line.
    #[inline(always)]
    fn prefetch_c(&self, ti: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
            let mr = self.a.mr;
            let (row0, nrows) = (ti * mr, mr.min(self.a.m - ti * mr));
            for r in row0..row0 + nrows {
                let at = r * self.ldc + self.col0;
                for p in [
                    at,
                    at + self.cols - 1,
                    at + self.cols,
                    at + 2 * self.cols - 1,
                ] {
                    // A prefetch reads nothing and never faults, and the address is not
                    // dereferenced (past the last panel it may lie outside C).
                    let line = self.c.get().wrapping_add(p).cast::<i8>();
                    // SAFETY: see above.
                    unsafe { _mm_prefetch::<_MM_HINT_ET0>(line) };
                }
            }
        }
    }

    /// How many rows of k to run across all tiles before moving on: all of them when the B
    /// panel fits in L1, which it must to be reused by every tile; otherwise a slice that
    /// does. The A panels stream from L2 either way, which the prefetchers keep up with
    /// (slicing k so that they fit in L1 too measured slower on the CRNN's conv2). f16
    /// weights are widened per panel, so they are not sliced.
    fn depth_chunk(&self) -> usize {
        const L1_BUDGET: usize = 28 * 1024;
        let k = self.a.k;
        let b_bytes = self.b_panel.len() * 4;
        if matches!(self.a.data, Store::F16(_)) || b_bytes <= L1_BUDGET {
            return k;
        }
        // Equal slices, each within the budget.
        let slices = b_bytes.div_ceil(L1_BUDGET);
        k.div_ceil(slices).div_ceil(8) * 8
    }

    /// A finished tile on its way to C: T's register epilogue where it takes the tile, the
    /// scalar one otherwise (sigmoid; on AVX2, tiles narrower than 16 columns).
    ///
    /// # Safety
    /// T's ISA is available.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn finish<T: RegisterTile>(&self, ti: usize, c: &T::Acc) {
        let (mr, nr) = (T::MR, T::NR);
        let (row0, nrows) = (ti * mr, mr.min(self.a.m - ti * mr));
        if T::stores(&self.ep, self.cols) {
            let at = row0 * self.ldc + self.col0;
            // SAFETY: this task owns rows row0..row0+nrows and columns col0..col0+cols of C,
            // which gemm_panels checked are inside C (and the residual, and the bias).
            unsafe {
                T::store(
                    [nrows, self.cols],
                    c,
                    self.c.get().add(at),
                    self.ldc,
                    [row0, self.col0],
                    &self.ep,
                    self.ep.residual.map(|r| r[at..].as_ptr()),
                )
            }
        } else {
            let mut spilled = [0.0f32; MAX_TILE];
            // SAFETY: T's ISA is available (the caller's contract).
            unsafe { T::spill(c, &mut spilled) };
            self.store_rows(row0, nrows, nr, &spilled);
        }
    }

    /// Rows row0..row0+nrows of C from a row-major accumulator tile `nr` wide.
    #[inline(always)]
    fn store_rows(&self, row0: usize, nrows: usize, nr: usize, acc: &[f32]) {
        for (i, acc_row) in acc.chunks_exact(nr).take(nrows).enumerate() {
            let r = row0 + i;
            // SAFETY: each task owns rows of its tiles and columns col0..col0+cols of C,
            // which are in bounds (asserted in gemm_panels) and written by no other task.
            let out = unsafe {
                std::slice::from_raw_parts_mut(
                    self.c.get().add(r * self.ldc + self.col0),
                    self.cols,
                )
            };
            let residual = self
                .ep
                .residual
                .map(|res| &res[r * self.ldc + self.col0..][..self.cols]);
            store_row(out, &acc_row[..self.cols], r, self.col0, self.ep, residual);
        }
    }
}

/// One row of a tile on its way to C: `out = act(acc + bias) + residual`, in a single pass
/// so each value is written once (separate bias, activation and residual passes re-read `out`
/// and left the epilogue slower than the micro-kernel for small k).
#[inline(always)]
fn store_row(
    out: &mut [f32],
    acc: &[f32],
    row: usize,
    col0: usize,
    ep: Epilogue,
    residual: Option<&[f32]>,
) {
    use super::activation::{clip, relu, sigmoid_fast};
    match ep.activation {
        None => store_row_with(out, acc, row, col0, ep.bias, residual, |x| x),
        Some(Activation::Relu) => store_row_with(out, acc, row, col0, ep.bias, residual, relu),
        Some(Activation::Clip { min, max }) => {
            store_row_with(out, acc, row, col0, ep.bias, residual, |x| {
                clip(x, min, max)
            })
        }
        Some(Activation::Sigmoid) => {
            store_row_with(out, acc, row, col0, ep.bias, residual, sigmoid_fast)
        }
    }
}

#[inline(always)]
fn store_row_with(
    out: &mut [f32],
    acc: &[f32],
    row: usize,
    col0: usize,
    bias: Bias,
    residual: Option<&[f32]>,
    act: impl Fn(f32) -> f32,
) {
    let n = out.len();
    let acc = &acc[..n];
    match (bias, residual) {
        (Bias::None, None) => out.iter_mut().zip(acc).for_each(|(o, &a)| *o = act(a)),
        (Bias::Row(b), None) => {
            let b = b[row];
            out.iter_mut().zip(acc).for_each(|(o, &a)| *o = act(a + b))
        }
        (Bias::Col(b), None) => out
            .iter_mut()
            .zip(acc)
            .zip(&b[col0..col0 + n])
            .for_each(|((o, &a), &bb)| *o = act(a + bb)),
        (Bias::None, Some(r)) => out
            .iter_mut()
            .zip(acc)
            .zip(&r[..n])
            .for_each(|((o, &a), &rr)| *o = act(a) + rr),
        (Bias::Row(b), Some(r)) => {
            let b = b[row];
            out.iter_mut()
                .zip(acc)
                .zip(&r[..n])
                .for_each(|((o, &a), &rr)| *o = act(a + b) + rr)
        }
        (Bias::Col(b), Some(r)) => out
            .iter_mut()
            .zip(acc)
            .zip(&b[col0..col0 + n])
            .zip(&r[..n])
            .for_each(|(((o, &a), &bb), &rr)| *o = act(a + bb) + rr),
    }
}

/// Plain triple-loop reference, for tests.
pub fn gemm_reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += av * b[p * n + j];
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    #[test]
    fn matches_reference_on_odd_shapes() {
        let mut rng = rand::rng();
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 7, 3),
            (6, 16, 16),
            (13, 33, 47),
            (64, 288, 100),
            (7, 1, 17),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let bias: Vec<f32> = (0..m).map(|_| rng.random_range(-1.0..1.0)).collect();
            let pa = PackedA::pack(&a, m, k, k, 1);
            let pb = PackedB::pack(&b, k, n, n, 1);
            let mut c = vec![f32::NAN; m * n];
            gemm(
                &pa,
                &pb,
                &mut c,
                n,
                Epilogue {
                    bias: Bias::Row(&bias),
                    activation: Some(Activation::Relu),
                    residual: None,
                },
            );
            let r = gemm_reference(&a, &b, m, k, n);
            let want = |i: usize, j: usize| (r[i * n + j] + bias[i]).max(0.0);
            assert_close(&c, m, n, want, &format!("({m},{k},{n})"));
        }
    }

    /// Every C[i][j] within 1e-4 (relative, plus absolute at small values) of `want(i, j)`.
    fn assert_close(c: &[f32], m: usize, n: usize, want: impl Fn(usize, usize) -> f32, what: &str) {
        for i in 0..m {
            for j in 0..n {
                let (got, want) = (c[i * n + j], want(i, j));
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{what} at ({i},{j}): {got} vs {want}"
                );
            }
        }
    }

    fn random(n: usize) -> Vec<f32> {
        let mut rng = rand::rng();
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    fn act_ref(act: Option<Activation>, x: f32) -> f32 {
        match act {
            None => x,
            Some(Activation::Relu) => x.max(0.0),
            Some(Activation::Clip { min, max }) => x.clamp(min, max),
            Some(Activation::Sigmoid) => 1.0 / (1.0 + (-x).exp()),
        }
    }

    /// Every epilogue (row and column bias, each activation, residual) on full and partial
    /// tiles, checked against the reference product.
    #[test]
    fn epilogues_match_reference() {
        let acts = [
            None,
            Some(Activation::Relu),
            Some(Activation::Clip {
                min: -0.3,
                max: 0.4,
            }),
            Some(Activation::Sigmoid),
        ];
        // (10, 600, 40): a B panel larger than L1, which AVX2 runs in slices of k.
        for &(m, k, n) in &[
            (12, 9, 32),
            (7, 20, 37),
            (1, 3, 5),
            (30, 64, 48),
            (10, 600, 40),
        ] {
            let a = random(m * k);
            let b = random(k * n);
            let (row_bias, col_bias, res) = (random(m), random(n), random(m * n));
            let pa = PackedA::pack(&a, m, k, k, 1);
            let pb = PackedB::pack(&b, k, n, n, 1);
            let r = gemm_reference(&a, &b, m, k, n);
            for act in acts {
                for bias_kind in 0..3 {
                    for with_res in [false, true] {
                        let bias = match bias_kind {
                            0 => Bias::None,
                            1 => Bias::Row(&row_bias),
                            _ => Bias::Col(&col_bias),
                        };
                        let ep = Epilogue {
                            bias,
                            activation: act,
                            residual: with_res.then_some(&res[..]),
                        };
                        let mut c = vec![f32::NAN; m * n];
                        gemm(&pa, &pb, &mut c, n, ep);
                        let want = |i: usize, j: usize| {
                            let bv = match bias_kind {
                                0 => 0.0,
                                1 => row_bias[i],
                                _ => col_bias[j],
                            };
                            let skip = if with_res { res[i * n + j] } else { 0.0 };
                            act_ref(act, r[i * n + j] + bv) + skip
                        };
                        let what = format!("({m},{k},{n}) {act:?} bias {bias_kind} res {with_res}");
                        assert_close(&c, m, n, want, &what);
                    }
                }
            }
        }
    }

    /// NaN in the product stays NaN through every activation, as in the scalar path.
    #[test]
    fn activations_keep_nan() {
        let (m, k, n) = (6, 4, 16);
        let mut a = random(m * k);
        a[0] = f32::NAN;
        let b = random(k * n);
        let pa = PackedA::pack(&a, m, k, k, 1);
        let pb = PackedB::pack(&b, k, n, n, 1);
        for act in [Activation::Relu, Activation::Clip { min: 0.0, max: 6.0 }] {
            let mut c = vec![0.0; m * n];
            let ep = Epilogue {
                bias: Bias::None,
                activation: Some(act),
                residual: None,
            };
            gemm(&pa, &pb, &mut c, n, ep);
            assert!(c[..n].iter().all(|v| v.is_nan()), "{act:?} dropped a NaN");
            assert!(c[n..].iter().all(|v| !v.is_nan()));
        }
    }

    /// B read in place: row panels of an image (partial last panels, reads past the data's
    /// end) and one flat row, against B materialised from the same offsets.
    #[test]
    fn implicit_b_matches_materialised_b() {
        let nr = Blocking::active().nr;
        for &(m, rows, width, row_stride, ch) in &[
            (10, 3, 21, 25, 3),
            (6, 1, 40, 0, 2),
            (13, 4, nr, nr + 2, 4),
            (5, 2, 7, 9, 1),
        ] {
            let plane = rows.max(1) * row_stride.max(width) + 4;
            let data = random(ch * plane);
            // Two taps per channel, the second one column to the right.
            let offsets: Vec<usize> = (0..ch).flat_map(|c| [c * plane, c * plane + 1]).collect();
            let k = offsets.len();
            let n = rows * width;
            let mut b = vec![0.0f32; k * n];
            for (p, &off) in offsets.iter().enumerate() {
                for y in 0..rows {
                    for x in 0..width {
                        b[p * n + y * width + x] = data[y * row_stride + x + off];
                    }
                }
            }
            let a = random(m * k);
            let bias = random(m);
            let pa = PackedA::pack(&a, m, k, k, 1);
            let ib = ImplicitB::new(&data, &offsets, rows, width, row_stride);
            let mut c = vec![f32::NAN; m * n];
            let ep = Epilogue {
                bias: Bias::Row(&bias),
                activation: Some(Activation::Relu),
                residual: None,
            };
            gemm_implicit(&pa, &ib, &mut c, n, ep);
            let r = gemm_reference(&a, &b, m, k, n);
            let want = |i: usize, j: usize| (r[i * n + j] + bias[i]).max(0.0);
            assert_close(&c, m, n, want, &format!("m {m} rows {rows} width {width}"));
        }
    }
}
