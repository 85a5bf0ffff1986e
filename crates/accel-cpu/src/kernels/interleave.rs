//! Splitting a row into its even and odd columns: the column phases that the stride-2
//! kernels (depthwise, the direct stem) read with contiguous loads.

use crate::isa::Isa;

/// even[i] = src[2i], odd[i] = src[2i + 1] (a last unpaired value goes to `even`), with
/// AVX2 shuffles where `isa` has them.
pub(crate) fn split_pairs(isa: Isa, src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: both ISAs are only selected after runtime detection of avx2.
        Isa::Avx2Fma | Isa::Avx512 => unsafe { avx2::split_pairs(src, even, odd) },
        _ => split_pairs_portable(src, even, odd),
    }
}

#[inline(always)]
fn split_pairs_portable(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
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
    use std::arch::x86_64::*;

    /// [`super::split_pairs`], 16 values per step: two loads, two shuffles picking the
    /// even and odd lanes of each 128-bit half, two permutes putting the halves in order.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn split_pairs(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
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
        super::split_pairs_portable(&src[done..], &mut even[done / 2..], &mut odd[done / 2..]);
    }
}
