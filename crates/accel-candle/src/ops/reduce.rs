//! Softmax, LogSoftmax and the Reduce family.

use super::{Ctx, Inputs, OrNode, axis, optional, required};
use crate::value::Value;
use accel_core::Result;
use accel_core::ir::ReduceOp;
use candle_core::Tensor;

/// Softmax over `axis`; opset < 13 (`legacy`) flattens to [before axis, from axis on] first.
pub fn softmax(ctx: &Ctx, ax: i64, legacy: bool, log: bool, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    if !x.is_float() {
        return Err(ctx.err(format!("input of {}", x.dtype)));
    }
    let dims = x.dims().to_vec();
    let a = axis(ctx, ax, dims.len())?;
    let f = |t: &Tensor, d: usize| {
        if log {
            candle_nn::ops::log_softmax(t, d)
        } else {
            candle_nn::ops::softmax(t, d)
        }
    };
    let y = if legacy && !dims.is_empty() {
        let outer: usize = dims[..a].iter().product();
        let inner: usize = dims[a..].iter().product();
        x.t.reshape((outer, inner))
            .and_then(|t| f(&t, 1))
            .and_then(|t| t.reshape(dims.clone()))
    } else {
        f(&x.t, a)
    }
    .or_node(ctx)?;
    Ok(Value::new(y, x.dtype))
}

pub fn reduce(
    ctx: &Ctx,
    op: ReduceOp,
    keepdims: bool,
    noop_with_empty_axes: bool,
    inputs: &Inputs,
) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let rank = x.rank();
    let given = match optional(inputs, 1) {
        Some(a) => a.to_i64s()?,
        None => vec![],
    };
    if given.is_empty() && noop_with_empty_axes {
        return Ok(x.clone());
    }
    let mut axes: Vec<usize> = if given.is_empty() {
        (0..rank).collect()
    } else {
        given
            .iter()
            .map(|&a| axis(ctx, a, rank))
            .collect::<Result<_>>()?
    };
    axes.sort_unstable();
    axes.dedup();
    if axes.iter().any(|&a| x.dims()[a] == 0) {
        return empty_reduction(ctx, x, op, &axes, keepdims);
    }
    let t = &x.t;
    let mut y = match op {
        ReduceOp::Sum => t.sum_keepdim(axes.clone()).or_node(ctx)?,
        ReduceOp::Mean => t.mean_keepdim(axes.clone()).or_node(ctx)?,
        ReduceOp::Max | ReduceOp::Min | ReduceOp::Prod => {
            let mut y = t.clone();
            for &a in &axes {
                y = match op {
                    ReduceOp::Max => y.max_keepdim(a),
                    ReduceOp::Min => y.min_keepdim(a),
                    _ => product(&y, a),
                }
                .or_node(ctx)?;
            }
            y
        }
    };
    if !keepdims {
        for &a in axes.iter().rev() {
            y = y.squeeze(a).or_node(ctx)?;
        }
    }
    Ok(Value::new(y, x.dtype))
}

/// The product along `dim`, kept as a unit axis (candle has no product reduction).
fn product(t: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
    let n = t.dims()[dim];
    let mut acc = t.narrow(dim, 0, 1)?;
    for i in 1..n {
        acc = (acc * t.narrow(dim, i, 1)?)?;
    }
    Ok(acc)
}

/// A reduction over an empty axis: the op's identity (0 for sums, 1 for products, -inf for
/// maxima, +inf for minima; a mean of nothing is NaN).
fn empty_reduction(
    ctx: &Ctx,
    x: &Value,
    op: ReduceOp,
    axes: &[usize],
    keepdims: bool,
) -> Result<Value> {
    let identity = match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Prod => 1.0,
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Min => f64::INFINITY,
        ReduceOp::Mean => f64::NAN,
    };
    let dims: Vec<usize> = x
        .dims()
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    let t = Tensor::full(identity, dims, x.t.device())
        .and_then(|t| t.to_dtype(x.t.dtype()))
        .or_node(ctx)?;
    Ok(Value::new(t, x.dtype))
}
