//! The AVX2 + FMA path: a 6 x 16 tile in 12 ymm accumulators (per k step two B loads, six
//! broadcasts, twelve FMAs) whose epilogue runs on the registers and stores straight into C.
//! Written out because the compiler's version of the generic tile spilled the accumulators
//! to the stack and finished the epilogue in 4-wide loops, which cost more than the k loop
//! for the U-Net's small-k 1x1 convolutions.

use super::{Bias, Epilogue};
use accel_core::ir::Activation;
use std::arch::x86_64::*;

pub(super) const MR: usize = 6;
pub(super) const NR: usize = 16;

// Everything here is `#[inline(always)]` and reached only from functions compiled with
// avx2 and fma, whose features it inherits: a `#[target_feature]` function of its own
// is not always inlined, and then the [__m256; 12] tile goes through memcpy.

/// The accumulators of A panel `a` (k x 6) times B panel `b` (k x 16), added to `c`,
/// for the panel's first `rows` rows; the others are left as they are. A last tile of
/// fewer rows (M = 8 is 6 + 2 in the U-Net's projections) skips the FMAs of its padding.
///
/// # Safety
/// AVX2 and FMA are available; `a` holds k * 6 values and `b` k * 16.
#[inline(always)]
pub(super) unsafe fn tile_from(
    rows: usize,
    k: usize,
    a: *const f32,
    b: *const f32,
    c: [__m256; 12],
) -> [__m256; 12] {
    // SAFETY: the caller's contract.
    unsafe { tile_dispatch(rows, k, a, b, None, c) }
}

/// [`tile_from`] with row p of B read in place at `b + b_rows[p]` (16 values each)
/// instead of from a packed panel.
///
/// # Safety
/// AVX2 and FMA are available; `a` holds k * 6 values, `b_rows` k offsets, and 16 values
/// from each `b + b_rows[p]` are readable.
#[inline(always)]
pub(super) unsafe fn tile_from_rows(
    rows: usize,
    k: usize,
    a: *const f32,
    b: *const f32,
    b_rows: *const usize,
    c: [__m256; 12],
) -> [__m256; 12] {
    // SAFETY: the caller's contract.
    unsafe { tile_dispatch(rows, k, a, b, Some(b_rows), c) }
}

#[inline(always)]
unsafe fn tile_dispatch(
    rows: usize,
    k: usize,
    a: *const f32,
    b: *const f32,
    b_rows: Option<*const usize>,
    c: [__m256; 12],
) -> [__m256; 12] {
    // SAFETY: the callers' contracts.
    unsafe {
        match (rows, b_rows) {
            (1, None) => tile_rows::<1, false>(k, a, b, b, c),
            (2, None) => tile_rows::<2, false>(k, a, b, b, c),
            (3, None) => tile_rows::<3, false>(k, a, b, b, c),
            (4, None) => tile_rows::<4, false>(k, a, b, b, c),
            (5, None) => tile_rows::<5, false>(k, a, b, b, c),
            (_, None) => tile_rows::<MR, false>(k, a, b, b, c),
            (1, Some(o)) => tile_rows::<1, true>(k, a, b, o.cast(), c),
            (2, Some(o)) => tile_rows::<2, true>(k, a, b, o.cast(), c),
            (3, Some(o)) => tile_rows::<3, true>(k, a, b, o.cast(), c),
            (4, Some(o)) => tile_rows::<4, true>(k, a, b, o.cast(), c),
            (5, Some(o)) => tile_rows::<5, true>(k, a, b, o.cast(), c),
            (_, Some(o)) => tile_rows::<MR, true>(k, a, b, o.cast(), c),
        }
    }
}

/// [`tile_from`] for R rows; with ROWS, B row p at `b + b_rows[p]` (`b_rows` a usize
/// array passed as a pointer of any type), else at `b + p * 16`.
///
/// # Safety
/// As for [`tile_from`] and [`tile_from_rows`].
#[inline(always)]
unsafe fn tile_rows<const R: usize, const ROWS: bool>(
    k: usize,
    a: *const f32,
    b: *const f32,
    b_rows: *const f32,
    mut c: [__m256; 12],
) -> [__m256; 12] {
    let b_rows = b_rows.cast::<usize>();
    for p in 0..k {
        // SAFETY: the caller's contract: p < k keeps both reads inside A and B.
        unsafe {
            let pb = if ROWS {
                b.add(*b_rows.add(p))
            } else {
                b.add(p * NR)
            };
            let b0 = _mm256_loadu_ps(pb);
            let b1 = _mm256_loadu_ps(pb.add(8));
            let pa = a.add(p * MR);
            for i in 0..R {
                let ai = _mm256_broadcast_ss(&*pa.add(i));
                c[2 * i] = _mm256_fmadd_ps(ai, b0, c[2 * i]);
                c[2 * i + 1] = _mm256_fmadd_ps(ai, b1, c[2 * i + 1]);
            }
        }
    }
    c
}

/// Zeroed accumulators.
///
/// # Safety
/// AVX is available.
#[inline(always)]
pub(super) unsafe fn zeros() -> [__m256; 12] {
    // SAFETY: the caller's contract.
    unsafe { [_mm256_setzero_ps(); 12] }
}

/// Whether [`store_full`] takes this epilogue (sigmoid goes through the scalar path).
pub(super) fn in_registers(ep: &Epilogue) -> bool {
    !matches!(ep.activation, Some(Activation::Sigmoid))
}

/// The first `rows` rows of a tile 16 wide: `out[i * ldc + j] = act(c + bias) +
/// residual[i * ldc + j]`.
///
/// # Safety
/// AVX2 is available; rows row0..row0+rows and columns col0..col0+16 of C, at `out` with
/// row stride `ldc`, are in bounds and this caller's alone; so are those of the residual
/// when given; `Bias::Row` holds row0 + rows values and `Bias::Col` col0 + 16.
#[inline(always)]
pub(super) unsafe fn store_full(
    rows: usize,
    c: &[__m256; 12],
    out: *mut f32,
    ldc: usize,
    [row0, col0]: [usize; 2],
    ep: &Epilogue,
    residual: Option<*const f32>,
) {
    // SAFETY: AVX2 is available and every access is inside the bounds the caller
    // promises.
    unsafe {
        let zero = _mm256_setzero_ps();
        let (lo, hi) = match ep.activation {
            Some(Activation::Clip { min, max }) => (_mm256_set1_ps(min), _mm256_set1_ps(max)),
            _ => (zero, zero),
        };
        for i in 0..rows.min(MR) {
            let (mut v0, mut v1) = (c[2 * i], c[2 * i + 1]);
            match ep.bias {
                Bias::None => {}
                Bias::Row(b) => {
                    let bb = _mm256_set1_ps(*b.get_unchecked(row0 + i));
                    v0 = _mm256_add_ps(v0, bb);
                    v1 = _mm256_add_ps(v1, bb);
                }
                Bias::Col(b) => {
                    let pb = b.as_ptr().add(col0);
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(pb));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(pb.add(8)));
                }
            }
            // The bound goes first: max/min return their second operand when either is
            // NaN, so NaN passes through as it does in the scalar path.
            match ep.activation {
                Some(Activation::Relu) => {
                    v0 = _mm256_max_ps(zero, v0);
                    v1 = _mm256_max_ps(zero, v1);
                }
                Some(Activation::Clip { .. }) => {
                    v0 = _mm256_min_ps(hi, _mm256_max_ps(lo, v0));
                    v1 = _mm256_min_ps(hi, _mm256_max_ps(lo, v1));
                }
                _ => {}
            }
            if let Some(r) = residual {
                let pr = r.add(i * ldc);
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(pr));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(pr.add(8)));
            }
            let po = out.add(i * ldc);
            _mm256_storeu_ps(po, v0);
            _mm256_storeu_ps(po.add(8), v1);
        }
    }
}

/// The accumulators as a row-major 6 x 16 array, for partial tiles.
///
/// # Safety
/// AVX is available.
#[inline(always)]
pub(super) unsafe fn spill(c: &[__m256; 12], out: &mut [f32]) {
    assert!(out.len() >= MR * NR);
    for (i, v) in c.iter().enumerate() {
        // SAFETY: AVX is available; out holds 96 floats (asserted), i * 8 + 8 <= 96.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i * 8), *v) };
    }
}

/// Accumulators spilled by [`spill`].
///
/// # Safety
/// AVX is available.
#[inline(always)]
pub(super) unsafe fn reload(from: &[f32]) -> [__m256; 12] {
    assert!(from.len() >= MR * NR);
    // SAFETY: AVX is available; from holds 96 floats (asserted), i * 8 + 8 <= 96.
    std::array::from_fn(|i| unsafe { _mm256_loadu_ps(from.as_ptr().add(i * 8)) })
}
