//! MatMul (numpy semantics: 1-D operands and broadcast batch axes) and Gemm on candle's
//! matmul.

use super::elementwise::activation;
use super::{Ctx, Inputs, OrNode, optional, required};
use crate::value::Value;
use accel_core::Result;
use accel_core::ir::{Activation, Gemm};
use candle_core::Tensor;

pub fn matmul(ctx: &Ctx, act: Option<Activation>, inputs: &Inputs) -> Result<Value> {
    let a = required(ctx, inputs, 0)?;
    let b = required(ctx, inputs, 1)?;
    if !a.is_float() || a.dtype != b.dtype {
        return Err(ctx.unsupported(format!("MatMul of {} by {}", a.dtype, b.dtype)));
    }
    if a.rank() == 0 || b.rank() == 0 {
        return Err(ctx.err("MatMul operands must have at least one axis"));
    }
    // A 1-D left operand is a row, a 1-D right one a column; both axes go again after.
    let x = if a.rank() == 1 {
        a.t.unsqueeze(0).or_node(ctx)?
    } else {
        a.t.clone()
    };
    let y = if b.rank() == 1 {
        b.t.unsqueeze(1).or_node(ctx)?
    } else {
        b.t.clone()
    };
    let (k1, k2) = (x.dims()[x.rank() - 1], y.dims()[y.rank() - 2]);
    if k1 != k2 {
        return Err(ctx.err(format!(
            "inner dimensions differ: {:?} x {:?}",
            a.dims(),
            b.dims()
        )));
    }
    let mut out = if x.rank() == 2 && y.rank() == 2 {
        x.contiguous().and_then(|x| x.matmul(&y.contiguous()?))
    } else {
        x.broadcast_matmul(&y)
    }
    .or_node(ctx)?;
    if b.rank() == 1 {
        out = out.squeeze(out.rank() - 1).or_node(ctx)?;
    }
    if a.rank() == 1 {
        out = out
            .squeeze(out.rank() - if b.rank() == 1 { 1 } else { 2 })
            .or_node(ctx)?;
    }
    if let Some(act) = act {
        out = activation(&out, act).or_node(ctx)?;
    }
    Ok(Value::new(out, a.dtype))
}

pub fn gemm(ctx: &Ctx, g: &Gemm, inputs: &Inputs) -> Result<Value> {
    let a = required(ctx, inputs, 0)?;
    let b = required(ctx, inputs, 1)?;
    if a.rank() != 2 || b.rank() != 2 {
        return Err(ctx.err(format!(
            "Gemm takes 2-D operands, got {:?} and {:?}",
            a.dims(),
            b.dims()
        )));
    }
    if !a.is_float() {
        return Err(ctx.unsupported(format!("Gemm on {}", a.dtype)));
    }
    let t = |v: &Tensor, trans: bool| -> candle_core::Result<Tensor> {
        if trans {
            v.t()?.contiguous()
        } else {
            v.contiguous()
        }
    };
    let x = t(&a.t, g.trans_a).or_node(ctx)?;
    let y = t(&b.t, g.trans_b).or_node(ctx)?;
    if x.dims()[1] != y.dims()[0] {
        return Err(ctx.err(format!(
            "inner dimensions differ: {:?} x {:?}",
            x.dims(),
            y.dims()
        )));
    }
    let mut out = x.matmul(&y).or_node(ctx)?;
    if g.alpha != 1.0 {
        out = (out * g.alpha as f64).or_node(ctx)?;
    }
    if let Some(c) = optional(inputs, 2)
        && g.beta != 0.0
    {
        let c = if g.beta != 1.0 {
            (&c.t * g.beta as f64).or_node(ctx)?
        } else {
            c.t.clone()
        };
        out = out.broadcast_add(&c).or_node(ctx)?;
    }
    if let Some(act) = g.activation {
        out = activation(&out, act).or_node(ctx)?;
    }
    Ok(Value::new(out, a.dtype))
}
