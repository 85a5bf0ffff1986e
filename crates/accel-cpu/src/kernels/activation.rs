//! Activations applied in kernel epilogues.

use accel_core::ir::Activation;

/// Applies `act` in place. Every form is a branch-free select or pure arithmetic, so the
/// loop vectorizes: a store only under a condition becomes a masked store, which costs tens
/// of cycles per vector on AMD cores.
#[inline]
pub fn apply_slice(act: Activation, v: &mut [f32]) {
    match act {
        Activation::Relu => v.iter_mut().for_each(|x| *x = relu(*x)),
        Activation::Clip { min, max } => v.iter_mut().for_each(|x| *x = clip(*x, min, max)),
        Activation::Sigmoid => v.iter_mut().for_each(|x| *x = sigmoid_fast(*x)),
    }
}

/// max(x, 0) that keeps NaN as NaN, as IEEE max would not.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 { 0.0 } else { x }
}

/// x clamped to [min, max]; comparisons with NaN are false, so NaN stays NaN (f32::max/min
/// would replace it with a bound).
#[inline(always)]
pub fn clip(x: f32, min: f32, max: f32) -> f32 {
    if x < min {
        min
    } else if x > max {
        max
    } else {
        x
    }
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so n * LN2_HI is exact for |n| < 2^10.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// exp(x) with only arithmetic and bit operations, so loops over it vectorize (Cephes' expf
/// polynomial; relative error below 2e-7). Inputs are clamped to the range where the result
/// is a normal float; NaN stays NaN.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5 * 2^23 trick (no libm call, vectorizes without SSE4.1).
    const MAGIC: f32 = 12_582_912.0;
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let poly = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    poly * scale
}

#[inline(always)]
pub fn sigmoid_fast(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
}

/// tanh(x) = 1 - 2 / (1 + e^(2x)); absolute error below 1e-6.
#[inline(always)]
pub fn tanh_fast(x: f32) -> f32 {
    1.0 - 2.0 / (1.0 + exp_fast(2.0 * x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_transcendentals_are_accurate() {
        let mut worst = (0.0f32, 0.0f32, 0.0f32);
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4 * 4.3; // -86 .. 86
            let rel = ((exp_fast(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs() as f32;
            let s = (sigmoid_fast(x) as f64 - 1.0 / (1.0 + (-(x as f64)).exp())).abs() as f32;
            let t = (tanh_fast(x) as f64 - (x as f64).tanh()).abs() as f32;
            worst = (worst.0.max(rel), worst.1.max(s), worst.2.max(t));
        }
        assert!(worst.0 < 2e-7 * 2.0, "exp relative error {}", worst.0);
        assert!(
            worst.1 < 1e-6 && worst.2 < 1e-6,
            "sigmoid {} tanh {}",
            worst.1,
            worst.2
        );
        assert!(
            exp_fast(f32::NAN).is_nan()
                && sigmoid_fast(f32::NAN).is_nan()
                && tanh_fast(f32::NAN).is_nan()
        );
        assert_eq!(tanh_fast(100.0), 1.0);
        assert_eq!(tanh_fast(-100.0), -1.0);
        assert!(sigmoid_fast(-100.0) < 1e-30 && sigmoid_fast(100.0) == 1.0);
    }
}
