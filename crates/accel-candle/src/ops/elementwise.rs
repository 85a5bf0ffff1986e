//! Activations, unary and binary elementwise ops (numpy broadcasting) and Where.

use super::{Ctx, Inputs, OrNode, optional, required};
use crate::value::Value;
use accel_core::ir::{Activation, BinaryOp, UnaryOp};
use accel_core::{DType, Result};
use candle_core::Tensor;

/// A fused activation (the epilogue of a Conv, ConvTranspose, Gemm or MatMul).
pub fn activation(t: &Tensor, a: Activation) -> candle_core::Result<Tensor> {
    match a {
        Activation::Relu => t.relu(),
        Activation::Clip { min, max } => t.clamp(min, max),
        Activation::Sigmoid => candle_nn::ops::sigmoid(t),
    }
}

pub fn unary(ctx: &Ctx, op: UnaryOp, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let t = &x.t;
    let float_only = !matches!(op, UnaryOp::Relu | UnaryOp::Neg | UnaryOp::Abs);
    if float_only && !x.is_float() {
        return Err(ctx.unsupported(format!("{} on {}", ctx.node.op.name(), x.dtype)));
    }
    let y = match op {
        UnaryOp::Relu => t.relu(),
        UnaryOp::Sigmoid => candle_nn::ops::sigmoid(t),
        UnaryOp::Tanh => t.tanh(),
        UnaryOp::Exp => t.exp(),
        UnaryOp::Log => t.log(),
        UnaryOp::Neg => t.neg(),
        UnaryOp::Abs => t.abs(),
        UnaryOp::Sqrt => t.sqrt(),
        UnaryOp::Reciprocal => t.recip(),
        UnaryOp::Floor => t.floor(),
        UnaryOp::Ceil => t.ceil(),
        UnaryOp::Erf => t.erf(),
        UnaryOp::Not => unreachable!("Not is a bool op: see `not`"),
    }
    .or_node(ctx)?;
    Ok(Value::new(y, x.dtype))
}

pub fn not(ctx: &Ctx, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let y = x.t.eq(0u8).or_node(ctx)?;
    Ok(Value::new(y, DType::Bool))
}

/// Clip with optional scalar bounds (inputs 1 and 2).
pub fn clip(ctx: &Ctx, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let bound = |i: usize| -> Result<Option<Tensor>> {
        let Some(b) = optional(inputs, i) else {
            return Ok(None);
        };
        if b.dims().iter().product::<usize>() != 1 {
            return Err(ctx.err(format!(
                "bound {i} must be a scalar, has shape {:?}",
                b.dims()
            )));
        }
        // A rank-0 bound, so that broadcasting keeps the input's rank (even a scalar's).
        Ok(Some(b.t.reshape(()).or_node(ctx)?))
    };
    let mut y = x.t.clone();
    if let Some(lo) = bound(1)? {
        y = y.broadcast_maximum(&lo).or_node(ctx)?;
    }
    if let Some(hi) = bound(2)? {
        y = y.broadcast_minimum(&hi).or_node(ctx)?;
    }
    Ok(Value::new(y, x.dtype))
}

pub fn leaky_relu(ctx: &Ctx, alpha: f32, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let zero = x.t.zeros_like().or_node(ctx)?;
    let pos = x.t.maximum(&zero).or_node(ctx)?;
    let neg = (x.t.minimum(&zero).or_node(ctx)? * alpha as f64).or_node(ctx)?;
    Ok(Value::new((pos + neg).or_node(ctx)?, x.dtype))
}

pub fn binary(ctx: &Ctx, op: BinaryOp, inputs: &Inputs) -> Result<Value> {
    let a = required(ctx, inputs, 0)?;
    let b = required(ctx, inputs, 1)?;
    if a.dtype != b.dtype {
        return Err(ctx.err(format!("operands of {} and {}", a.dtype, b.dtype)));
    }
    let (x, y) = (&a.t, &b.t);
    let (t, dtype) = match op {
        BinaryOp::Add => (x.broadcast_add(y), a.dtype),
        BinaryOp::Sub => (x.broadcast_sub(y), a.dtype),
        BinaryOp::Mul => (x.broadcast_mul(y), a.dtype),
        BinaryOp::Div => (x.broadcast_div(y), a.dtype),
        BinaryOp::Max => (x.broadcast_maximum(y), a.dtype),
        BinaryOp::Min => (x.broadcast_minimum(y), a.dtype),
        BinaryOp::Equal => (x.broadcast_eq(y), DType::Bool),
        BinaryOp::Less => (x.broadcast_lt(y), DType::Bool),
        BinaryOp::Greater => (x.broadcast_gt(y), DType::Bool),
        // Bools are 0/1 bytes: their product is And, their maximum Or.
        BinaryOp::And => (x.broadcast_mul(y), DType::Bool),
        BinaryOp::Or => (x.broadcast_maximum(y), DType::Bool),
        BinaryOp::Pow => return Err(ctx.unsupported("Pow")),
    };
    Ok(Value::new(t.or_node(ctx)?, dtype))
}

/// The shape all of `dims` broadcast to (numpy rules).
pub fn broadcast_dims(ctx: &Ctx, dims: &[&[usize]]) -> Result<Vec<usize>> {
    let rank = dims.iter().map(|d| d.len()).max().unwrap_or(0);
    let mut out = vec![1; rank];
    for d in dims {
        for (i, &n) in d.iter().enumerate() {
            let o = &mut out[rank - d.len() + i];
            if *o == 1 {
                *o = n;
            } else if n != 1 && n != *o {
                return Err(ctx.err(format!("shapes {dims:?} do not broadcast")));
            }
        }
    }
    Ok(out)
}

pub fn where_(ctx: &Ctx, inputs: &Inputs) -> Result<Value> {
    let c = required(ctx, inputs, 0)?;
    let x = required(ctx, inputs, 1)?;
    let y = required(ctx, inputs, 2)?;
    let shape = broadcast_dims(ctx, &[c.dims(), x.dims(), y.dims()])?;
    let b = |t: &Tensor| t.broadcast_as(shape.clone()).and_then(|t| t.contiguous());
    let out = b(&c.t)
        .and_then(|cond| cond.where_cond(&b(&x.t)?, &b(&y.t)?))
        .or_node(ctx)?;
    Ok(Value::new(out, x.dtype))
}
