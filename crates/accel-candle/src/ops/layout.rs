//! Shape and layout ops: concat, split, reshape, transpose, squeeze and unsqueeze, flatten,
//! shape, gather, slice, expand, tile, pad, cast, constants and ranges. Shape-like inputs
//! (targets, axes, pads, indices) are read back to the host: they are a handful of values.

use super::elementwise::broadcast_dims;
use super::{Ctx, Inputs, OrNode, axis, optional, required};
use crate::value::{Value, candle_dtype};
use accel_core::ir::PadMode;
use accel_core::{DType, Result, Tensor as AccelTensor};
use candle_core::Tensor;

pub fn concat(ctx: &Ctx, ax: i64, inputs: &Inputs) -> Result<Value> {
    let parts: Vec<&Value> = inputs.iter().flatten().copied().collect();
    let first = parts.first().ok_or_else(|| ctx.err("no inputs"))?;
    let a = axis(ctx, ax, first.rank())?;
    let ts: Vec<&Tensor> = parts.iter().map(|v| &v.t).collect();
    Ok(Value::new(Tensor::cat(&ts, a).or_node(ctx)?, first.dtype))
}

pub fn split(ctx: &Ctx, ax: i64, num_outputs: usize, inputs: &Inputs) -> Result<Vec<Value>> {
    let x = required(ctx, inputs, 0)?;
    let a = axis(ctx, ax, x.rank())?;
    let len = x.dims()[a];
    let sizes: Vec<usize> = match optional(inputs, 1) {
        Some(s) => s
            .to_i64s()?
            .into_iter()
            .map(|n| usize::try_from(n).map_err(|_| ctx.err(format!("split size {n}"))))
            .collect::<Result<_>>()?,
        None => {
            let n = num_outputs.max(1);
            let chunk = len.div_ceil(n);
            (0..n)
                .map(|i| chunk.min(len.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.iter().sum::<usize>() != len {
        return Err(ctx.err(format!("split sizes {sizes:?} do not add up to {len}")));
    }
    let mut at = 0;
    sizes
        .iter()
        .map(|&n| {
            let part = x.t.narrow(a, at, n).or_node(ctx)?;
            at += n;
            Ok(Value::new(part, x.dtype))
        })
        .collect()
}

/// `x` as `dims` (same element count), copied to a contiguous layout first if needed.
fn reshaped(ctx: &Ctx, x: &Value, dims: Vec<usize>) -> Result<Value> {
    let t =
        x.t.contiguous()
            .and_then(|t| t.reshape(dims))
            .or_node(ctx)?;
    Ok(Value::new(t, x.dtype))
}

pub fn reshape(ctx: &Ctx, allowzero: bool, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let target = required(ctx, inputs, 1)?.to_i64s()?;
    let count: usize = x.dims().iter().product();
    let mut dims = Vec::with_capacity(target.len());
    let mut hole = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            0 if !allowzero => dims.push(
                *x.dims()
                    .get(i)
                    .ok_or_else(|| ctx.err(format!("0 at axis {i} copies no input axis")))?,
            ),
            -1 if hole.is_none() => {
                hole = Some(i);
                dims.push(1);
            }
            d if d >= 0 => dims.push(d as usize),
            _ => return Err(ctx.err(format!("reshape target {target:?}"))),
        }
    }
    let known: usize = dims.iter().product();
    if let Some(i) = hole {
        if known == 0 || !count.is_multiple_of(known) {
            return Err(ctx.err(format!("cannot reshape {:?} to {target:?}", x.dims())));
        }
        dims[i] = count / known;
    }
    if dims.iter().product::<usize>() != count {
        return Err(ctx.err(format!("cannot reshape {:?} to {target:?}", x.dims())));
    }
    reshaped(ctx, x, dims)
}

pub fn transpose(ctx: &Ctx, perm: Option<&[usize]>, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let perm: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..x.rank()).rev().collect(),
    };
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..x.rank()).collect::<Vec<_>>() {
        return Err(ctx.err(format!(
            "perm {perm:?} is not a permutation of {} axes",
            x.rank()
        )));
    }
    let t =
        x.t.permute(perm)
            .and_then(|t| t.contiguous())
            .or_node(ctx)?;
    Ok(Value::new(t, x.dtype))
}

fn axes_input(ctx: &Ctx, inputs: &Inputs, i: usize, rank: usize) -> Result<Option<Vec<usize>>> {
    let Some(v) = optional(inputs, i) else {
        return Ok(None);
    };
    let mut axes = v
        .to_i64s()?
        .into_iter()
        .map(|a| axis(ctx, a, rank))
        .collect::<Result<Vec<_>>>()?;
    axes.sort_unstable();
    let n = axes.len();
    axes.dedup();
    if axes.len() != n {
        return Err(ctx.err("an axis is given twice"));
    }
    Ok(Some(axes))
}

pub fn squeeze(ctx: &Ctx, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let dims = x.dims();
    let axes = match axes_input(ctx, inputs, 1, x.rank())? {
        Some(a) => a,
        None => (0..x.rank()).filter(|&i| dims[i] == 1).collect(),
    };
    if let Some(&a) = axes.iter().find(|&&a| dims[a] != 1) {
        return Err(ctx.err(format!("axis {a} of {dims:?} is not 1")));
    }
    let out: Vec<usize> = (0..x.rank())
        .filter(|i| !axes.contains(i))
        .map(|i| dims[i])
        .collect();
    reshaped(ctx, x, out)
}

pub fn unsqueeze(ctx: &Ctx, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let rank = x.rank() + required(ctx, inputs, 1)?.to_i64s()?.len();
    let axes = axes_input(ctx, inputs, 1, rank)?.unwrap_or_default();
    let mut src = x.dims().iter();
    let out: Vec<usize> = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                *src.next().unwrap_or(&1)
            }
        })
        .collect();
    reshaped(ctx, x, out)
}

pub fn flatten(ctx: &Ctx, ax: i64, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let r = x.rank() as i64;
    if ax < -r || ax > r {
        return Err(ctx.err(format!("axis {ax} is out of range for rank {r}")));
    }
    let a = if ax < 0 { ax + r } else { ax } as usize;
    let outer: usize = x.dims()[..a].iter().product();
    let inner: usize = x.dims()[a..].iter().product();
    reshaped(ctx, x, vec![outer, inner])
}

pub fn shape(ctx: &Ctx, start: i64, end: Option<i64>, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let r = x.rank() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    let dims: Vec<i64> = x.dims()[s..e.max(s)].iter().map(|&d| d as i64).collect();
    let n = dims.len();
    Ok(Value::new(
        Tensor::from_vec(dims, n, ctx.device).or_node(ctx)?,
        DType::I64,
    ))
}

pub fn gather(ctx: &Ctx, ax: i64, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let idx = required(ctx, inputs, 1)?;
    let a = axis(ctx, ax, x.rank())?;
    let n = x.dims()[a] as i64;
    let ids = idx
        .to_i64s()?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + n } else { i };
            if (0..n).contains(&j) {
                Ok(j as u32)
            } else {
                Err(ctx.err(format!("index {i} is out of range for an axis of {n}")))
            }
        })
        .collect::<Result<Vec<u32>>>()?;
    let count = ids.len();
    let ids = Tensor::from_vec(ids, count, ctx.device).or_node(ctx)?;
    let picked =
        x.t.contiguous()
            .and_then(|t| t.index_select(&ids, a))
            .or_node(ctx)?;
    let dims: Vec<usize> = [&x.dims()[..a], idx.dims(), &x.dims()[a + 1..]].concat();
    reshaped(ctx, &Value::new(picked, x.dtype), dims)
}

/// The indices of one axis that a Slice keeps (ONNX's clamping rules).
fn slice_indices(dim: usize, start: i64, end: i64, step: i64) -> Vec<usize> {
    let n = dim as i64;
    let norm = |v: i64| if v < 0 { v + n } else { v };
    let mut out = Vec::new();
    if step > 0 {
        let (mut i, e) = (norm(start).clamp(0, n), norm(end).clamp(0, n));
        while i < e {
            out.push(i as usize);
            i += step;
        }
    } else {
        let (mut i, e) = (norm(start).clamp(-1, n - 1), norm(end).clamp(-1, n - 1));
        while i > e {
            out.push(i as usize);
            i += step;
        }
    }
    out
}

pub fn slice(ctx: &Ctx, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let starts = required(ctx, inputs, 1)?.to_i64s()?;
    let ends = required(ctx, inputs, 2)?.to_i64s()?;
    let axes: Vec<i64> = match optional(inputs, 3) {
        Some(a) => a.to_i64s()?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps: Vec<i64> = match optional(inputs, 4) {
        Some(s) => s.to_i64s()?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(ctx.err("starts, ends, axes and steps differ in length"));
    }
    let mut t = x.t.clone();
    for k in 0..starts.len() {
        let a = axis(ctx, axes[k], x.rank())?;
        if steps[k] == 0 {
            return Err(ctx.err("a step is 0"));
        }
        let ids = slice_indices(t.dims()[a], starts[k], ends[k], steps[k]);
        t = match (ids.first(), steps[k]) {
            (Some(&first), 1) => t.narrow(a, first, ids.len()),
            (None, _) => t.narrow(a, 0, 0),
            _ => {
                let ids: Vec<u32> = ids.into_iter().map(|i| i as u32).collect();
                let n = ids.len();
                Tensor::from_vec(ids, n, ctx.device)
                    .and_then(|ids| t.contiguous()?.index_select(&ids, a))
            }
        }
        .or_node(ctx)?;
    }
    Ok(Value::new(t, x.dtype))
}

fn usizes(ctx: &Ctx, v: &Value, what: &str) -> Result<Vec<usize>> {
    v.to_i64s()?
        .into_iter()
        .map(|n| usize::try_from(n).map_err(|_| ctx.err(format!("{what} holds {n}"))))
        .collect()
}

pub fn expand(ctx: &Ctx, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let shape = usizes(ctx, required(ctx, inputs, 1)?, "the shape")?;
    let out = broadcast_dims(ctx, &[x.dims(), &shape])?;
    let t =
        x.t.broadcast_as(out)
            .and_then(|t| t.contiguous())
            .or_node(ctx)?;
    Ok(Value::new(t, x.dtype))
}

pub fn tile(ctx: &Ctx, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let reps = usizes(ctx, required(ctx, inputs, 1)?, "repeats")?;
    if reps.len() != x.rank() {
        return Err(ctx.err(format!("{} repeats for rank {}", reps.len(), x.rank())));
    }
    Ok(Value::new(x.t.repeat(reps).or_node(ctx)?, x.dtype))
}

/// Source indices of one padded axis under reflect or edge padding.
fn padded_indices(n: usize, before: usize, after: usize, mode: PadMode) -> Vec<u32> {
    let n = n as i64;
    (-(before as i64)..n + after as i64)
        .map(|i| {
            let j = match mode {
                PadMode::Edge => i.clamp(0, n - 1),
                _ => {
                    // Reflect about the first and last entries, bouncing as often as needed.
                    let period = 2 * (n - 1).max(1);
                    let m = i.rem_euclid(period);
                    if m < n { m } else { period - m }
                }
            };
            j as u32
        })
        .collect()
}

pub fn pad(ctx: &Ctx, mode: PadMode, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let pads = required(ctx, inputs, 1)?.to_i64s()?;
    let rank = x.rank();
    let axes: Vec<usize> = match optional(inputs, 3) {
        Some(a) => a
            .to_i64s()?
            .into_iter()
            .map(|a| axis(ctx, a, rank))
            .collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(ctx.err(format!("{} pads for {} axes", pads.len(), axes.len())));
    }
    let value = match optional(inputs, 2) {
        Some(v) => *v.to_f64s()?.first().unwrap_or(&0.0),
        None => 0.0,
    };
    let mut t = x.t.clone();
    for (k, &a) in axes.iter().enumerate() {
        let (b, e) = (pads[k], pads[k + axes.len()]);
        // Negative pads crop.
        let dim = t.dims()[a] as i64;
        let (cb, ce) = ((-b).max(0), (-e).max(0));
        if cb + ce > dim {
            return Err(ctx.err(format!("pads {pads:?} crop more than axis {a} holds")));
        }
        t = t
            .narrow(a, cb as usize, (dim - cb - ce) as usize)
            .or_node(ctx)?;
        let (b, e) = (b.max(0) as usize, e.max(0) as usize);
        if b == 0 && e == 0 {
            continue;
        }
        t = match mode {
            PadMode::Constant => super::conv::pad_value(&t, a, b, e, value),
            _ => {
                let n = t.dims()[a];
                if n == 0 || (mode == PadMode::Reflect && (b >= n.max(2) || e >= n.max(2))) {
                    return Err(ctx.err(format!("{mode:?} padding of {b}/{e} on an axis of {n}")));
                }
                let ids = padded_indices(n, b, e, mode);
                let len = ids.len();
                Tensor::from_vec(ids, len, ctx.device)
                    .and_then(|ids| t.contiguous()?.index_select(&ids, a))
            }
        }
        .or_node(ctx)?;
    }
    Ok(Value::new(t, x.dtype))
}

pub fn constant_of_shape(ctx: &Ctx, value: &AccelTensor, inputs: &Inputs) -> Result<Value> {
    let shape = usizes(ctx, required(ctx, inputs, 0)?, "the shape")?;
    let one = crate::value::to_candle(value.view(), ctx.device)?;
    let t = one
        .t
        .flatten_all()
        .and_then(|t| t.broadcast_as(shape.clone()))
        .and_then(|t| t.contiguous())
        .or_node(ctx)?;
    Ok(Value::new(t, one.dtype))
}

pub fn range(ctx: &Ctx, inputs: &Inputs) -> Result<Value> {
    let scalar = |i: usize| -> Result<(f64, DType)> {
        let v = required(ctx, inputs, i)?;
        Ok((
            *v.to_f64s()?
                .first()
                .ok_or_else(|| ctx.err("empty scalar"))?,
            v.dtype,
        ))
    };
    let ((start, dtype), (limit, _), (delta, _)) = (scalar(0)?, scalar(1)?, scalar(2)?);
    if delta == 0.0 {
        return Err(ctx.err("delta is 0"));
    }
    let n = ((limit - start) / delta).ceil().max(0.0) as usize;
    let t = match dtype {
        DType::F32 | DType::F16 => {
            let v: Vec<f32> = (0..n).map(|i| (start + i as f64 * delta) as f32).collect();
            Tensor::from_vec(v, n, ctx.device)
        }
        _ => {
            let (s, d) = (start as i64, delta as i64);
            let v: Vec<i64> = (0..n as i64).map(|i| s + i * d).collect();
            Tensor::from_vec(v, n, ctx.device)
        }
    }
    .and_then(|t| t.to_dtype(candle_dtype(dtype)))
    .or_node(ctx)?;
    Ok(Value::new(t, dtype))
}

pub fn cast(ctx: &Ctx, to: DType, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let t = if to == DType::Bool {
        x.t.to_dtype(candle_core::DType::F64)
            .and_then(|t| t.ne(0.0))
    } else if x.t.dtype() == candle_dtype(to) {
        Ok(x.t.clone())
    } else {
        x.t.to_dtype(candle_dtype(to))
    }
    .or_node(ctx)?;
    Ok(Value::new(t, to))
}

pub fn dropout(ctx: &Ctx, inputs: &Inputs) -> Result<Vec<Value>> {
    let x = required(ctx, inputs, 0)?;
    let mut out = vec![x.clone()];
    if ctx.node.outputs.len() > 1 {
        let mask = Tensor::ones(x.dims(), candle_core::DType::U8, ctx.device).or_node(ctx)?;
        out.push(Value::new(mask, DType::Bool));
    }
    Ok(out)
}
