//! Resize, nearest and linear, one axis at a time: the source positions of each output
//! index are computed on the host (ONNX's coordinate transforms), then gathered with
//! index_select and, for linear, blended with per-index weights.

use super::{Ctx, Inputs, OrNode, optional, required};
use crate::value::Value;
use accel_core::Result;
use accel_core::ir::{CoordTransform, NearestMode, Resize, ResizeMode};
use candle_core::Tensor;

/// Output sizes and scales from the `sizes` input, else `scales`.
fn targets(ctx: &Ctx, dims: &[usize], inputs: &Inputs) -> Result<(Vec<usize>, Vec<f32>)> {
    let rank = dims.len();
    if let Some(sizes) = optional(inputs, 3).filter(|v| !v.dims().contains(&0)) {
        let sizes = sizes.to_i64s()?;
        if sizes.len() != rank || sizes.iter().any(|&s| s < 0) {
            return Err(ctx.err(format!("sizes {sizes:?} do not fit rank {rank}")));
        }
        let out: Vec<usize> = sizes.iter().map(|&s| s as usize).collect();
        let scales = out
            .iter()
            .zip(dims)
            .map(|(&o, &i)| o as f32 / i.max(1) as f32)
            .collect();
        return Ok((out, scales));
    }
    let scales: Vec<f32> = match optional(inputs, 2).filter(|v| !v.dims().contains(&0)) {
        Some(s) => s.to_f64s()?.into_iter().map(|v| v as f32).collect(),
        None => return Err(ctx.err("neither scales nor sizes is given")),
    };
    if scales.len() != rank || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(ctx.err(format!("scales {scales:?} do not fit rank {rank}")));
    }
    let out = dims
        .iter()
        .zip(&scales)
        .map(|(&d, &s)| (d as f32 * s).floor() as usize)
        .collect();
    Ok((out, scales))
}

/// Where output index `o` samples the input axis, in input coordinates.
fn source(coord: CoordTransform, o: usize, scale: f32, len_in: usize, len_out: usize) -> f32 {
    let o = o as f32;
    match coord {
        CoordTransform::HalfPixel => (o + 0.5) / scale - 0.5,
        CoordTransform::PytorchHalfPixel if len_out > 1 => (o + 0.5) / scale - 0.5,
        CoordTransform::AlignCorners if len_out > 1 => {
            o * (len_in as f32 - 1.0) / (len_out as f32 - 1.0)
        }
        CoordTransform::PytorchHalfPixel | CoordTransform::AlignCorners => 0.0,
        CoordTransform::Asymmetric | CoordTransform::TfCropAndResize => o / scale,
    }
}

fn round(mode: NearestMode, x: f32) -> f32 {
    match mode {
        // Halves go down; everything else to the nearest integer.
        NearestMode::RoundPreferFloor if x - x.floor() == 0.5 => x.floor(),
        NearestMode::RoundPreferFloor | NearestMode::RoundPreferCeil => x.round(),
        NearestMode::Floor => x.floor(),
        NearestMode::Ceil => x.ceil(),
    }
}

pub fn resize(ctx: &Ctx, r: &Resize, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    if !x.is_float() {
        return Err(ctx.unsupported(format!("Resize on {}", x.dtype)));
    }
    let (out, scales) = targets(ctx, x.dims(), inputs)?;
    let mut t = x.t.clone();
    for a in 0..out.len() {
        let len_in = t.dims()[a];
        if len_in == out[a] && scales[a] == 1.0 {
            continue;
        }
        if len_in == 0 {
            return Err(ctx.err(format!("axis {a} is empty and cannot be resized")));
        }
        let last = (len_in - 1) as f32;
        let mut lo = Vec::with_capacity(out[a]);
        let mut hi = Vec::with_capacity(out[a]);
        let mut w = Vec::with_capacity(out[a]);
        for o in 0..out[a] {
            let s = source(r.coord, o, scales[a], len_in, out[a]);
            match r.mode {
                ResizeMode::Nearest => {
                    lo.push(round(r.nearest_mode, s).clamp(0.0, last) as u32);
                }
                ResizeMode::Linear => {
                    let s = s.clamp(0.0, last);
                    let l = s.floor();
                    lo.push(l as u32);
                    hi.push((l + 1.0).min(last) as u32);
                    w.push(s - l);
                }
            }
        }
        let n = out[a];
        let pick = |ids: Vec<u32>| {
            Tensor::from_vec(ids, n, ctx.device)
                .and_then(|ids| t.contiguous()?.index_select(&ids, a))
        };
        let low = pick(lo).or_node(ctx)?;
        t = if r.mode == ResizeMode::Linear {
            let high = pick(hi).or_node(ctx)?;
            let mut shape = vec![1; t.rank()];
            shape[a] = n;
            let w = Tensor::from_vec(w, shape, ctx.device)
                .and_then(|w| w.to_dtype(t.dtype()))
                .or_node(ctx)?;
            (&high - &low)
                .and_then(|d| d.broadcast_mul(&w))
                .and_then(|d| d + &low)
                .or_node(ctx)?
        } else {
            low
        };
    }
    Ok(Value::new(t, x.dtype))
}
