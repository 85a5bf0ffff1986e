//! Elementwise functions of one tensor.

use crate::ir::UnaryOp;
use crate::{Error, Result, Tensor, TensorData};
use half::f16;

/// Applies `f` to a float tensor (f16 goes through f32).
fn map_float(x: &Tensor, f: impl Fn(f32) -> f32) -> Result<Tensor> {
    let data = match x.data() {
        TensorData::F32(v) => TensorData::F32(v.iter().map(|&a| f(a)).collect()),
        TensorData::F16(v) => {
            TensorData::F16(v.iter().map(|a| f16::from_f32(f(a.to_f32()))).collect())
        }
        other => {
            return Err(Error::Other(format!(
                "expected a float tensor, got {}",
                other.dtype()
            )));
        }
    };
    Tensor::new(x.shape().to_vec(), data)
}

/// The f32 function of a float unary op (None for `Not`, which takes bools).
pub fn f32_fn(op: UnaryOp) -> Option<fn(f32) -> f32> {
    Some(match op {
        UnaryOp::Relu => |a| if a < 0.0 { 0.0 } else { a },
        UnaryOp::Sigmoid => |a| 1.0 / (1.0 + (-a).exp()),
        UnaryOp::Tanh => f32::tanh,
        UnaryOp::Exp => f32::exp,
        UnaryOp::Log => f32::ln,
        UnaryOp::Neg => |a| -a,
        UnaryOp::Abs => f32::abs,
        UnaryOp::Sqrt => f32::sqrt,
        UnaryOp::Reciprocal => |a| 1.0 / a,
        UnaryOp::Floor => f32::floor,
        UnaryOp::Ceil => f32::ceil,
        UnaryOp::Erf => erf,
        UnaryOp::Not => return None,
    })
}

pub(super) fn eval_unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    // Integer inputs for the ops that define them.
    match (op, x.data()) {
        (UnaryOp::Not, TensorData::Bool(v)) => {
            return Tensor::new(
                x.shape().to_vec(),
                TensorData::Bool(v.iter().map(|b| !b).collect()),
            );
        }
        (UnaryOp::Neg, TensorData::I64(v)) => {
            return Tensor::new(
                x.shape().to_vec(),
                TensorData::I64(v.iter().map(|a| a.wrapping_neg()).collect()),
            );
        }
        (UnaryOp::Abs, TensorData::I64(v)) => {
            return Tensor::new(
                x.shape().to_vec(),
                TensorData::I64(v.iter().map(|a| a.wrapping_abs()).collect()),
            );
        }
        (UnaryOp::Relu, TensorData::I64(v)) => {
            return Tensor::new(
                x.shape().to_vec(),
                TensorData::I64(v.iter().map(|&a| a.max(0)).collect()),
            );
        }
        _ => {}
    }
    let f = f32_fn(op).ok_or_else(|| Error::Other("Not expects a bool tensor".into()))?;
    map_float(x, f)
}

pub(super) fn eval_clip(x: &Tensor, min: Option<&Tensor>, max: Option<&Tensor>) -> Result<Tensor> {
    match x.data() {
        TensorData::I64(v) => {
            let lo = min
                .map(|t| t.to_i64_vec())
                .transpose()?
                .and_then(|v| v.first().copied())
                .unwrap_or(i64::MIN);
            let hi = max
                .map(|t| t.to_i64_vec())
                .transpose()?
                .and_then(|v| v.first().copied())
                .unwrap_or(i64::MAX);
            Tensor::new(
                x.shape().to_vec(),
                TensorData::I64(v.iter().map(|&a| a.max(lo).min(hi)).collect()),
            )
        }
        _ => {
            let (lo, hi) = clip_bounds(min, max)?;
            map_float(x, |a| clip(a, lo, hi))
        }
    }
}

/// Clip's float bounds; an absent bound is unbounded.
pub(super) fn clip_bounds(min: Option<&Tensor>, max: Option<&Tensor>) -> Result<(f32, f32)> {
    Ok((
        scalar_f32(min)?.unwrap_or(f32::NEG_INFINITY),
        scalar_f32(max)?.unwrap_or(f32::INFINITY),
    ))
}

/// NaN propagates: max/min with a NaN operand would drop it.
pub(super) fn clip(a: f32, lo: f32, hi: f32) -> f32 {
    if a.is_nan() { a } else { a.max(lo).min(hi) }
}

fn scalar_f32(t: Option<&Tensor>) -> Result<Option<f32>> {
    match t {
        None => Ok(None),
        Some(t) => Ok(t.to_f32_vec()?.first().copied()),
    }
}

pub(super) fn eval_leaky_relu(x: &Tensor, alpha: f32) -> Result<Tensor> {
    map_float(x, |a| if a < 0.0 { alpha * a } else { a })
}

/// Error function via the Chebyshev-fitted erfc of Numerical Recipes (fractional error below
/// 1.2e-7, i.e. at f32 precision), evaluated in f64.
pub fn erf(x: f32) -> f32 {
    let x = x as f64;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = 1.0
        - t * (-x * x - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    (if x >= 0.0 { y } else { -y }) as f32
}
