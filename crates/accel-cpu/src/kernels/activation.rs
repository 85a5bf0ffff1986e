//! Activations applied in kernel epilogues.

use accel_core::ir::Activation;

#[inline]
pub fn apply_slice(act: Activation, v: &mut [f32]) {
    match act {
        // `x < 0` keeps NaN as NaN, as IEEE max would not.
        Activation::Relu => v
            .iter_mut()
            .for_each(|x| *x = if *x < 0.0 { 0.0 } else { *x }),
        // NaN stays NaN: f32::max/min would replace it with a bound.
        Activation::Clip { min, max } => v.iter_mut().for_each(|x| {
            if !x.is_nan() {
                *x = x.max(min).min(max)
            }
        }),
        Activation::Sigmoid => v.iter_mut().for_each(|x| *x = sigmoid(*x)),
    }
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
