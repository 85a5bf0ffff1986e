//! Packed single-precision GEMM: C = A·B with a fused epilogue (bias, activation).
//!
//! A is packed into panels of `mr` rows and B into panels of `nr` columns, each panel laid out
//! k-major so the micro-kernel streams both linearly. Weights are packed once at compile
//! time; activations are packed per call (or written packed directly, see `conv`'s im2col).
//! The register tile depends on the ISA chosen at start ([`Blocking`]): 8 x 32 on AVX-512F
//! (16 zmm accumulators, hand-written), 6 x 16 on AVX2+FMA and on the portable path (plain
//! Rust over fixed-size arrays that the compiler turns into 12 ymm accumulators, or 24 NEON
//! registers on aarch64).

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

/// acc (mr x nr, row-major) = A panel · B panel over k.
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
#[target_feature(enable = "avx2,fma")]
fn tile_avx2(k: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    tile_generic::<6, 16, true>(k, a, b, out)
}

/// 8 x 32 tile in 16 zmm accumulators: per k step two B vectors, eight broadcasts of A and
/// sixteen FMAs, which keeps both FMA pipes of a Zen 4/5 or Xeon core busy.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn tile_avx512(k: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(a.len() >= k * 8 && b.len() >= k * 32 && out.len() >= 8 * 32);
    let mut acc = [_mm512_setzero_ps(); 16];
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    for p in 0..k {
        // SAFETY: p < k and the lengths asserted above keep every read inside a and b.
        unsafe {
            let b0 = _mm512_loadu_ps(pb.add(p * 32));
            let b1 = _mm512_loadu_ps(pb.add(p * 32 + 16));
            for i in 0..8 {
                let ai = _mm512_set1_ps(*pa.add(p * 8 + i));
                acc[2 * i] = _mm512_fmadd_ps(ai, b0, acc[2 * i]);
                acc[2 * i + 1] = _mm512_fmadd_ps(ai, b1, acc[2 * i + 1]);
            }
        }
    }
    for (i, v) in acc.iter().enumerate() {
        // SAFETY: out holds 8 * 32 floats (asserted), and i * 16 + 16 <= 256.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(i * 16), *v) };
    }
}

/// C (m x n, row stride ldc) = A·B, then the epilogue. Tiles are spread over the current
/// rayon pool.
pub fn gemm(a: &PackedA, b: &PackedB, c: &mut [f32], ldc: usize, ep: Epilogue) {
    assert_eq!(a.k, b.k, "gemm: inner dimensions differ");
    gemm_panels(a, b.n, PanelSource::Packed(b), c, ldc, ep);
}

/// C = A·B where B's column panels are produced on demand by `fill(panel_index, panel)` into
/// a zeroed [k][nr] buffer (`nr` from [`Blocking::active`]), right before use: the panel is
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
    gemm_panels(a, n, PanelSource::Fill(fill), c, ldc, ep);
}

enum PanelSource<'a> {
    Packed(&'a PackedB),
    Fill(&'a (dyn Fn(usize, &mut [f32]) + Sync)),
}

fn gemm_panels(a: &PackedA, n: usize, src: PanelSource, c: &mut [f32], ldc: usize, ep: Epilogue) {
    let (m, k) = (a.m, a.k);
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: C is too small");
    if let Some(res) = ep.residual {
        assert!(
            res.len() >= (m - 1) * ldc + n,
            "gemm: the residual is too small"
        );
    }
    let isa = isa::active();
    let Blocking { mr, nr } = Blocking::of(isa);
    assert_eq!(a.mr, mr, "gemm: A was packed for another ISA");
    if let PanelSource::Packed(b) = &src {
        assert_eq!(b.nr, nr, "gemm: B was packed for another ISA");
    }
    let (mp, np) = (m.div_ceil(mr), n.div_ceil(nr));
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
    let c_ptr = SyncPtr(c.as_mut_ptr());
    let task = |t: usize, scratch: &mut Scratch| {
        let (tj, chunk) = (t / row_chunks, t % row_chunks);
        let b_panel: &[f32] = match &src {
            PanelSource::Packed(b) => b.panel(tj, scratch),
            PanelSource::Fill(fill) => {
                let panel = scratch.reset_zeroed(k * nr);
                fill(tj, panel);
                panel
            }
        };
        let job = ColumnTiles {
            a,
            b_panel,
            tj,
            nr,
            tiles: chunk * rows_per_chunk..((chunk + 1) * rows_per_chunk).min(mp),
            n,
            c: c_ptr,
            ldc,
            ep,
        };
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::Avx512 is only selected after runtime detection of avx512f.
            Isa::Avx512 => unsafe { job.run_avx512() },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::Avx2Fma is only selected after runtime detection of avx2 and fma.
            Isa::Avx2Fma => unsafe { job.run_avx2() },
            _ => job.run(|k, a, b, out| {
                tile_generic::<6, 16, { cfg!(target_arch = "aarch64") }>(k, a, b, out)
            }),
        }
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

/// Tiles `tiles` of one column panel: micro-kernel, then bias and activation on the way to
/// C. Compiled once per ISA so the epilogue is vectorized as wide as the micro-kernel.
struct ColumnTiles<'a> {
    a: &'a PackedA,
    b_panel: &'a [f32],
    tj: usize,
    nr: usize,
    tiles: std::ops::Range<usize>,
    n: usize,
    c: SyncPtr,
    ldc: usize,
    ep: Epilogue<'a>,
}

impl ColumnTiles<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn run_avx512(&self) {
        self.run(|k, a, b, out| tile_avx512(k, a, b, out))
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self) {
        self.run(|k, a, b, out| tile_avx2(k, a, b, out))
    }

    #[inline(always)]
    fn run(&self, micro: impl Fn(usize, &[f32], &[f32], &mut [f32])) {
        let (a, m, k, mr, nr) = (self.a, self.a.m, self.a.k, self.a.mr, self.nr);
        let col0 = self.tj * nr;
        let cols = nr.min(self.n - col0);
        let mut acc = [0.0f32; MAX_TILE];
        let mut a_scratch = Scratch::new();
        for ti in self.tiles.clone() {
            micro(
                k,
                a.panel(ti, &mut a_scratch),
                self.b_panel,
                &mut acc[..mr * nr],
            );
            let rows = mr.min(m - ti * mr);
            for (i, acc_row) in acc.chunks_exact(nr).take(rows).enumerate() {
                let r = ti * mr + i;
                // SAFETY: each (ti, tj) tile owns rows ti*mr.. and columns tj*nr.. of C, which
                // are in bounds (asserted in gemm_panels) and written by no other task.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(self.c.get().add(r * self.ldc + col0), cols)
                };
                let residual = self
                    .ep
                    .residual
                    .map(|res| &res[r * self.ldc + col0..][..cols]);
                store_row(out, &acc_row[..cols], r, col0, self.ep, residual);
            }
        }
    }
}

#[inline(always)]
fn store_row(
    out: &mut [f32],
    acc: &[f32],
    row: usize,
    col0: usize,
    ep: Epilogue,
    residual: Option<&[f32]>,
) {
    match ep.bias {
        Bias::None => out.copy_from_slice(acc),
        Bias::Row(b) => out.iter_mut().zip(acc).for_each(|(o, &a)| *o = a + b[row]),
        Bias::Col(b) => out
            .iter_mut()
            .zip(acc)
            .zip(&b[col0..])
            .for_each(|((o, &a), &bb)| *o = a + bb),
    }
    if let Some(act) = ep.activation {
        super::activation::apply_slice(act, out);
    }
    if let Some(res) = residual {
        out.iter_mut().zip(res).for_each(|(o, &r)| *o += r);
    }
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: tiles write disjoint regions of C (see `gemm`).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
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
            for i in 0..m {
                for j in 0..n {
                    let want = (r[i * n + j] + bias[i]).max(0.0);
                    let got = c[i * n + j];
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "({m},{k},{n}) at ({i},{j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
