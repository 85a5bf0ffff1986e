//! Packed single-precision GEMM: C = A·B with a fused epilogue (bias, activation).
//!
//! A is packed into panels of MR rows and B into panels of NR columns, each panel laid out
//! k-major so the micro-kernel streams both linearly. Weights are packed once at compile
//! time; activations are packed per call (or written packed directly, see `conv`'s im2col).
//! The micro-kernel is plain Rust over fixed-size arrays; compiled once for the baseline
//! target and once with AVX2+FMA enabled, it vectorizes to 12 ymm accumulators.

use crate::isa::{self, Isa};
use accel_core::ir::Activation;
use rayon::prelude::*;

pub const MR: usize = 6;
pub const NR: usize = 16;

/// A packed as ceil(m/MR) panels of [k][MR], zero-padded past m.
#[derive(Clone, Debug)]
pub struct PackedA {
    pub m: usize,
    pub k: usize,
    data: Vec<f32>,
}

/// B packed as ceil(n/NR) panels of [k][NR], zero-padded past n.
#[derive(Clone, Debug)]
pub struct PackedB {
    pub k: usize,
    pub n: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// Packs A where element (i, p) is `a[i * rs + p * cs]`.
    pub fn pack(a: &[f32], m: usize, k: usize, rs: usize, cs: usize) -> PackedA {
        let panels = m.div_ceil(MR);
        let mut data = vec![0.0; panels * k * MR];
        if k == 0 {
            return PackedA { m, k, data };
        }
        for (pi, panel) in data.chunks_exact_mut(k * MR).enumerate() {
            for i in 0..MR.min(m - pi * MR) {
                let row = pi * MR + i;
                for p in 0..k {
                    panel[p * MR + i] = a[row * rs + p * cs];
                }
            }
        }
        PackedA { m, k, data }
    }

    fn panel(&self, i: usize) -> &[f32] {
        &self.data[i * self.k * MR..(i + 1) * self.k * MR]
    }
}

impl PackedB {
    /// Packs B where element (p, j) is `b[p * rs + j * cs]`.
    pub fn pack(b: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> PackedB {
        let mut pb = PackedB::zeroed(k, n);
        if k == 0 {
            return pb;
        }
        let k_ = pb.k;
        pb.data
            .par_chunks_exact_mut(k_ * NR)
            .enumerate()
            .for_each(|(pj, panel)| {
                let cols = NR.min(n - pj * NR);
                for p in 0..k {
                    let dst = &mut panel[p * NR..p * NR + cols];
                    if cs == 1 {
                        let at = p * rs + pj * NR;
                        dst.copy_from_slice(&b[at..at + cols]);
                    } else {
                        for (j, d) in dst.iter_mut().enumerate() {
                            *d = b[p * rs + (pj * NR + j) * cs];
                        }
                    }
                }
            });
        pb
    }

    /// An all-zero packed B, to be filled panel by panel (e.g. by a packing im2col).
    pub fn zeroed(k: usize, n: usize) -> PackedB {
        PackedB {
            k,
            n,
            data: vec![0.0; n.div_ceil(NR) * k * NR],
        }
    }

    pub fn panels_mut(&mut self) -> std::slice::ChunksExactMut<'_, f32> {
        let len = (self.k * NR).max(1);
        self.data.chunks_exact_mut(len)
    }

    fn panel(&self, j: usize) -> &[f32] {
        &self.data[j * self.k * NR..(j + 1) * self.k * NR]
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

#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub bias: Bias<'a>,
    pub activation: Option<Activation>,
}

impl Epilogue<'_> {
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: Bias::None,
        activation: None,
    };
}

type Tile = [[f32; NR]; MR];

#[inline(always)]
fn tile_generic<const FMA: bool>(k: usize, a: &[f32], b: &[f32]) -> Tile {
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
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tile_avx2(k: usize, a: &[f32], b: &[f32]) -> Tile {
    tile_generic::<true>(k, a, b)
}

#[inline]
fn tile(isa: Isa, k: usize, a: &[f32], b: &[f32]) -> Tile {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Isa::Avx2Fma is only selected after runtime detection of avx2 and fma.
        Isa::Avx2Fma => unsafe { tile_avx2(k, a, b) },
        _ => tile_generic::<false>(k, a, b),
    }
}

/// C (m x n, row stride ldc) = A·B, then the epilogue. Tiles are spread over the current
/// rayon pool.
pub fn gemm(a: &PackedA, b: &PackedB, c: &mut [f32], ldc: usize, ep: Epilogue) {
    assert_eq!(a.k, b.k, "gemm: inner dimensions differ");
    gemm_panels(a, b.n, PanelSource::Packed(b), c, ldc, ep);
}

/// C = A·B where B's column panels are produced on demand by `fill(panel_index, panel)` into
/// a zeroed [k][NR] buffer, right before use: the panel is hot in L1 for every A panel, and
/// no k x n copy of B is ever materialised (convolution's im2col works this way).
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
    let isa = isa::active();
    let (mp, np) = (m.div_ceil(MR), n.div_ceil(NR));
    let c_ptr = SyncPtr(c.as_mut_ptr());
    // One column panel of B against every A panel.
    let run_column = |tj: usize, scratch: &mut Vec<f32>| {
        let b_panel: &[f32] = match &src {
            PanelSource::Packed(b) => b.panel(tj),
            PanelSource::Fill(fill) => {
                scratch.clear();
                scratch.resize(k * NR, 0.0);
                fill(tj, scratch);
                scratch
            }
        };
        let cols = NR.min(n - tj * NR);
        for ti in 0..mp {
            let acc = tile(isa, k, a.panel(ti), b_panel);
            let rows = MR.min(m - ti * MR);
            for (i, acc_row) in acc.iter().enumerate().take(rows) {
                let r = ti * MR + i;
                // SAFETY: each (ti, tj) tile owns rows ti*MR.. and columns tj*NR.. of C, which
                // are in bounds (asserted above) and written by no other tile.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(c_ptr.get().add(r * ldc + tj * NR), cols)
                };
                store_row(out, &acc_row[..cols], r, tj * NR, ep);
            }
        }
    };
    if np >= 2 && rayon::current_num_threads() > 1 && m * n * k >= 1 << 15 {
        (0..np)
            .into_par_iter()
            .for_each_init(Vec::new, |scratch, tj| run_column(tj, scratch));
    } else {
        let mut scratch = Vec::new();
        (0..np).for_each(|tj| run_column(tj, &mut scratch));
    }
}

#[inline(always)]
fn store_row(out: &mut [f32], acc: &[f32], row: usize, col0: usize, ep: Epilogue) {
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
