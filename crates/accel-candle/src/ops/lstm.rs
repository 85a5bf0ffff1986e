//! ONNX LSTM (gates i, o, f, c; default activations sigmoid, tanh, tanh) on candle: the
//! input projection of every step is one matmul per direction, then one step at a time.

use super::{Ctx, Inputs, OrNode, optional, required};
use crate::value::Value;
use accel_core::Result;
use accel_core::ir::{Direction, Lstm};
use candle_core::Tensor;
use candle_nn::ops::sigmoid;

pub fn lstm(ctx: &Ctx, l: &Lstm, inputs: &Inputs) -> Result<Vec<Value>> {
    let x = required(ctx, inputs, 0)?;
    let w = required(ctx, inputs, 1)?;
    let r = required(ctx, inputs, 2)?;
    if x.rank() != 3 || w.rank() != 3 || r.rank() != 3 {
        return Err(ctx.err("X, W and R must be 3-D"));
    }
    // Time-major [seq, batch, input] inside.
    let xt = if l.layout == 1 {
        x.t.transpose(0, 1).or_node(ctx)?
    } else {
        x.t.clone()
    };
    let (seq, batch, input) = xt.dims3().or_node(ctx)?;
    let h = l.hidden_size;
    let nd = l.direction.num_directions();
    if w.dims() != [nd, 4 * h, input] || r.dims() != [nd, 4 * h, h] {
        return Err(ctx.err(format!(
            "W {:?} and R {:?} do not fit {nd} direction(s), hidden size {h}, input size {input}",
            w.dims(),
            r.dims()
        )));
    }
    if let Some(lens) = optional(inputs, 4)
        && lens.to_i64s()?.iter().any(|&n| n != seq as i64)
    {
        return Err(ctx.unsupported("sequence_lens shorter than the sequence"));
    }
    let state = |i: usize| -> Result<Option<Tensor>> {
        let Some(v) = optional(inputs, i) else {
            return Ok(None);
        };
        // Batch-major [batch, nd, h] under layout 1; [nd, batch, h] inside.
        let t = if l.layout == 1 {
            v.t.transpose(0, 1).or_node(ctx)?
        } else {
            v.t.clone()
        };
        if t.dims() != [nd, batch, h] {
            return Err(ctx.err(format!(
                "initial state {:?} does not fit [{nd}, {batch}, {h}]",
                v.dims()
            )));
        }
        Ok(Some(t))
    };
    let (h0, c0) = (state(5)?, state(6)?);
    let xs = xt.reshape((seq * batch, input)).or_node(ctx)?;
    let mut ys = Vec::with_capacity(nd);
    let mut hs = Vec::with_capacity(nd);
    let mut cs = Vec::with_capacity(nd);
    for d in 0..nd {
        let reverse = l.direction == Direction::Reverse || d == 1;
        let wd = w.t.get(d).and_then(|t| t.t()).or_node(ctx)?;
        let rd = r.t.get(d).and_then(|t| t.t()?.contiguous()).or_node(ctx)?;
        let mut proj = xs.matmul(&wd.contiguous().or_node(ctx)?).or_node(ctx)?;
        if let Some(b) = optional(inputs, 3) {
            let bd = b.t.get(d).or_node(ctx)?;
            let bias = (bd.narrow(0, 0, 4 * h).or_node(ctx)?
                + bd.narrow(0, 4 * h, 4 * h).or_node(ctx)?)
            .or_node(ctx)?;
            proj = proj.broadcast_add(&bias).or_node(ctx)?;
        }
        let proj = proj.reshape((seq, batch, 4 * h)).or_node(ctx)?;
        let peep = match optional(inputs, 7) {
            Some(p) => {
                let pd = p.t.get(d).or_node(ctx)?;
                let part = |k: usize| pd.narrow(0, k * h, h);
                Some((
                    part(0).or_node(ctx)?,
                    part(1).or_node(ctx)?,
                    part(2).or_node(ctx)?,
                ))
            }
            None => None,
        };
        let zeros = || Tensor::zeros((batch, h), x.t.dtype(), x.t.device());
        let mut ht = match &h0 {
            Some(t) => t.get(d).or_node(ctx)?,
            None => zeros().or_node(ctx)?,
        };
        let mut ct = match &c0 {
            Some(t) => t.get(d).or_node(ctx)?,
            None => zeros().or_node(ctx)?,
        };
        let mut steps: Vec<Tensor> = vec![ht.clone(); seq];
        for s in 0..seq {
            let t = if reverse { seq - 1 - s } else { s };
            let gates = proj.get(t).and_then(|p| p + ht.matmul(&rd)?).or_node(ctx)?;
            let gates = match l.clip {
                Some(c) => gates.clamp(-c, c).or_node(ctx)?,
                None => gates,
            };
            let gate = |k: usize| gates.narrow(1, k * h, h);
            let (mut i, mut o, mut f, g) = (
                gate(0).or_node(ctx)?,
                gate(1).or_node(ctx)?,
                gate(2).or_node(ctx)?,
                gate(3).or_node(ctx)?,
            );
            if let Some((pi, _, pf)) = &peep {
                i = (i + ct.broadcast_mul(pi).or_node(ctx)?).or_node(ctx)?;
                f = (f + ct.broadcast_mul(pf).or_node(ctx)?).or_node(ctx)?;
            }
            let i = sigmoid(&i).or_node(ctx)?;
            let f = if l.input_forget {
                (1.0 - &i).or_node(ctx)?
            } else {
                sigmoid(&f).or_node(ctx)?
            };
            let g = g.tanh().or_node(ctx)?;
            ct = ((f * &ct).or_node(ctx)? + (i * g).or_node(ctx)?).or_node(ctx)?;
            if let Some((_, po, _)) = &peep {
                o = (o + ct.broadcast_mul(po).or_node(ctx)?).or_node(ctx)?;
            }
            let o = sigmoid(&o).or_node(ctx)?;
            ht = (o * ct.tanh().or_node(ctx)?).or_node(ctx)?;
            steps[t] = ht.clone();
        }
        ys.push(Tensor::stack(&steps, 0).or_node(ctx)?);
        hs.push(ht);
        cs.push(ct);
    }
    // Y [seq, nd, batch, h], Y_h and Y_c [nd, batch, h]; batch-major under layout 1.
    let y = Tensor::stack(&ys, 1).or_node(ctx)?;
    let yh = Tensor::stack(&hs, 0).or_node(ctx)?;
    let yc = Tensor::stack(&cs, 0).or_node(ctx)?;
    let (y, yh, yc) = if l.layout == 1 {
        (
            y.permute((2, 0, 1, 3)).or_node(ctx)?,
            yh.transpose(0, 1).or_node(ctx)?,
            yc.transpose(0, 1).or_node(ctx)?,
        )
    } else {
        (y, yh, yc)
    };
    Ok([y, yh, yc]
        .into_iter()
        .map(|t| Value::new(t, x.dtype))
        .collect())
}
