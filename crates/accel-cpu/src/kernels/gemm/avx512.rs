//! The AVX-512F path: an 8 x 32 tile in 16 zmm accumulators (per k step two B loads, eight
//! broadcasts, sixteen FMAs, which keeps both FMA pipes of a Xeon or Zen 4/5 core busy),
//! with the epilogue on the registers. Partial tiles need no spill: a last tile of fewer
//! rows skips the FMAs of its padding, and fewer than 32 columns are masked loads and stores.
//! The generic tile with a scalar epilogue (spill, then per-row loops) reached 55% of the
//! FMA peak on Winograd's 64 x 32 x 32 products; the epilogue cost about as much as the k
//! loop there.

use super::{Bias, Epilogue};
use accel_core::ir::Activation;
use std::arch::x86_64::*;

pub(super) const MR: usize = 8;
pub(super) const NR: usize = 32;

// As in `avx2`: everything is `#[inline(always)]` and reached only from functions compiled
// with avx512f, whose features it inherits.

/// The accumulators of A panel `a` (k x 8) times B panel `b` (k x 32), added to `c`, for
/// the panel's first `rows` rows; the others are left as they are.
///
/// # Safety
/// AVX-512F is available; `a` holds k * 8 values and `b` k * 32.
#[inline(always)]
pub(super) unsafe fn tile_from(
    rows: usize,
    k: usize,
    a: *const f32,
    b: *const f32,
    c: [__m512; 16],
) -> [__m512; 16] {
    // SAFETY: the caller's contract.
    unsafe {
        match rows {
            1 => tile_rows::<1>(k, a, b, c),
            2 => tile_rows::<2>(k, a, b, c),
            3 => tile_rows::<3>(k, a, b, c),
            4 => tile_rows::<4>(k, a, b, c),
            5 => tile_rows::<5>(k, a, b, c),
            6 => tile_rows::<6>(k, a, b, c),
            7 => tile_rows::<7>(k, a, b, c),
            _ => tile_rows::<MR>(k, a, b, c),
        }
    }
}

/// [`tile_from`] for R rows.
///
/// # Safety
/// As for [`tile_from`].
#[inline(always)]
unsafe fn tile_rows<const R: usize>(
    k: usize,
    a: *const f32,
    b: *const f32,
    mut c: [__m512; 16],
) -> [__m512; 16] {
    for p in 0..k {
        // SAFETY: the caller's contract: p < k keeps both reads inside A and B.
        unsafe {
            let pb = b.add(p * NR);
            let b0 = _mm512_loadu_ps(pb);
            let b1 = _mm512_loadu_ps(pb.add(16));
            let pa = a.add(p * MR);
            for i in 0..R {
                let ai = _mm512_set1_ps(*pa.add(i));
                c[2 * i] = _mm512_fmadd_ps(ai, b0, c[2 * i]);
                c[2 * i + 1] = _mm512_fmadd_ps(ai, b1, c[2 * i + 1]);
            }
        }
    }
    c
}

/// Zeroed accumulators.
///
/// # Safety
/// AVX-512F is available.
#[inline(always)]
pub(super) unsafe fn zeros() -> [__m512; 16] {
    // SAFETY: the caller's contract.
    unsafe { [_mm512_setzero_ps(); 16] }
}

/// Whether [`store`] takes this epilogue (sigmoid goes through the scalar path).
pub(super) fn in_registers(ep: &Epilogue) -> bool {
    !matches!(ep.activation, Some(Activation::Sigmoid))
}

/// Lane masks of the two registers of a row `cols` (1..=32) wide.
#[inline(always)]
fn masks(cols: usize) -> [__mmask16; 2] {
    let lanes = |n: usize| -> __mmask16 {
        match n {
            0 => 0,
            16.. => 0xffff,
            n => (1u16 << n) - 1,
        }
    };
    [lanes(cols), lanes(cols.saturating_sub(16))]
}

/// The first `rows` rows and `cols` columns of a tile: `out[i * ldc + j] = act(c + bias) +
/// residual[i * ldc + j]`.
///
/// # Safety
/// AVX-512F is available; rows row0..row0+rows and columns col0..col0+cols of C, at `out`
/// with row stride `ldc`, are in bounds and this caller's alone; so are those of the residual
/// when given; `Bias::Row` holds row0 + rows values and `Bias::Col` col0 + cols.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store(
    rows: usize,
    cols: usize,
    c: &[__m512; 16],
    out: *mut f32,
    ldc: usize,
    [row0, col0]: [usize; 2],
    ep: &Epilogue,
    residual: Option<*const f32>,
) {
    let [m0, m1] = masks(cols);
    let full = cols >= NR;
    // SAFETY: AVX-512F is available and every access is inside the bounds the caller
    // promises: masked lanes are neither read nor written.
    unsafe {
        let zero = _mm512_setzero_ps();
        let (lo, hi) = match ep.activation {
            Some(Activation::Clip { min, max }) => (_mm512_set1_ps(min), _mm512_set1_ps(max)),
            _ => (zero, zero),
        };
        let load = |p: *const f32| {
            if full {
                [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))]
            } else {
                [
                    _mm512_maskz_loadu_ps(m0, p),
                    _mm512_maskz_loadu_ps(m1, p.add(16)),
                ]
            }
        };
        let col_bias = match ep.bias {
            Bias::Col(b) => Some(load(b.as_ptr().add(col0))),
            _ => None,
        };
        for i in 0..rows.min(MR) {
            let (mut v0, mut v1) = (c[2 * i], c[2 * i + 1]);
            match (ep.bias, col_bias) {
                (Bias::Row(b), _) => {
                    let bb = _mm512_set1_ps(*b.get_unchecked(row0 + i));
                    v0 = _mm512_add_ps(v0, bb);
                    v1 = _mm512_add_ps(v1, bb);
                }
                (_, Some([b0, b1])) => {
                    v0 = _mm512_add_ps(v0, b0);
                    v1 = _mm512_add_ps(v1, b1);
                }
                _ => {}
            }
            // The bound goes first: max/min return their second operand when either is
            // NaN, so NaN passes through as it does in the scalar path.
            match ep.activation {
                Some(Activation::Relu) => {
                    v0 = _mm512_max_ps(zero, v0);
                    v1 = _mm512_max_ps(zero, v1);
                }
                Some(Activation::Clip { .. }) => {
                    v0 = _mm512_min_ps(hi, _mm512_max_ps(lo, v0));
                    v1 = _mm512_min_ps(hi, _mm512_max_ps(lo, v1));
                }
                _ => {}
            }
            if let Some(r) = residual {
                let [r0, r1] = load(r.add(i * ldc));
                v0 = _mm512_add_ps(v0, r0);
                v1 = _mm512_add_ps(v1, r1);
            }
            let po = out.add(i * ldc);
            if full {
                _mm512_storeu_ps(po, v0);
                _mm512_storeu_ps(po.add(16), v1);
            } else {
                _mm512_mask_storeu_ps(po, m0, v0);
                _mm512_mask_storeu_ps(po.add(16), m1, v1);
            }
        }
    }
}

/// The accumulators as a row-major 8 x 32 array, for the scalar epilogue.
///
/// # Safety
/// AVX-512F is available.
#[inline(always)]
pub(super) unsafe fn spill(c: &[__m512; 16], out: &mut [f32]) {
    assert!(out.len() >= MR * NR);
    for (i, v) in c.iter().enumerate() {
        // SAFETY: AVX-512F is available; out holds 256 floats (asserted), i * 16 + 16 <= 256.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(i * 16), *v) };
    }
}

/// Accumulators spilled by [`spill`].
///
/// # Safety
/// AVX-512F is available.
#[inline(always)]
pub(super) unsafe fn reload(from: &[f32]) -> [__m512; 16] {
    assert!(from.len() >= MR * NR);
    // SAFETY: AVX-512F is available; from holds 256 floats (asserted), i * 16 + 16 <= 256.
    std::array::from_fn(|i| unsafe { _mm512_loadu_ps(from.as_ptr().add(i * 16)) })
}
