//! Conv, ConvTranspose, pooling and batch norm on candle's conv2d, conv_transpose2d and
//! pool kernels. candle takes one symmetric padding and one stride for both axes, so pads
//! (ONNX's may differ per side) are applied by padding the input, 1-D windows run as 2-D
//! ones over a unit height, and unequal strides run at stride 1 and then subsample.

use super::elementwise::activation;
use super::{Ctx, Inputs, OrNode, optional, required};
use crate::value::Value;
use accel_core::Result;
use accel_core::ir::{AutoPad, Conv, ConvTranspose, Pool, Window};
use candle_core::Tensor;

/// Per-axis geometry of a window after auto_pad and ceil mode are resolved.
struct Geometry {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    begin: Vec<usize>,
    end: Vec<usize>,
}

fn ones_or(v: &[usize], n: usize) -> Vec<usize> {
    if v.is_empty() { vec![1; n] } else { v.to_vec() }
}

/// Pads of a Conv or pool window over `input` (ONNX's auto_pad rules).
fn geometry(ctx: &Ctx, w: &Window, input: &[usize], kernel: &[usize]) -> Result<Geometry> {
    let n = input.len();
    let strides = ones_or(&w.strides, n);
    let dilations = ones_or(&w.dilations, n);
    if kernel.len() != n || strides.len() != n || dilations.len() != n {
        return Err(ctx.err(format!(
            "kernel {kernel:?}, strides {strides:?} and dilations {dilations:?} do not fit {n} spatial axes"
        )));
    }
    if strides.contains(&0) || dilations.contains(&0) || kernel.contains(&0) {
        return Err(ctx.err("kernel, strides and dilations must be positive"));
    }
    let (mut begin, mut end) = match w.pads.len() {
        0 => (vec![0; n], vec![0; n]),
        l if l == 2 * n => (w.pads[..n].to_vec(), w.pads[n..].to_vec()),
        _ => return Err(ctx.err(format!("pads {:?} do not fit {n} spatial axes", w.pads))),
    };
    match w.auto_pad {
        AutoPad::NotSet => {}
        AutoPad::Valid => (begin, end) = (vec![0; n], vec![0; n]),
        AutoPad::SameUpper | AutoPad::SameLower => {
            for i in 0..n {
                let out = input[i].div_ceil(strides[i]);
                let span = dilations[i] * (kernel[i] - 1) + 1;
                let total = ((out.max(1) - 1) * strides[i] + span).saturating_sub(input[i]);
                let (small, large) = (total / 2, total - total / 2);
                (begin[i], end[i]) = if w.auto_pad == AutoPad::SameUpper {
                    (small, large)
                } else {
                    (large, small)
                };
            }
        }
    }
    Ok(Geometry {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        begin,
        end,
    })
}

/// `t` padded along `dim` with `before` and `after` copies of `value`.
pub fn pad_value(
    t: &Tensor,
    dim: usize,
    before: usize,
    after: usize,
    value: f64,
) -> candle_core::Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(t.clone());
    }
    let side = |len: usize| -> candle_core::Result<Tensor> {
        let mut dims = t.dims().to_vec();
        dims[dim] = len;
        Tensor::full(value, dims, t.device())?.to_dtype(t.dtype())
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(side(before)?);
    }
    parts.push(t.clone());
    if after > 0 {
        parts.push(side(after)?);
    }
    Tensor::cat(&parts, dim)
}

/// The `len` values of `dim` starting at `start` (negative or past the end: zeros there).
fn window(t: &Tensor, dim: usize, start: i64, len: usize) -> candle_core::Result<Tensor> {
    let size = t.dims()[dim] as i64;
    let lead = ((-start).max(0) as usize).min(len);
    let from = start.max(0).min(size);
    let to = (start + len as i64).clamp(from, size);
    let inner = t.narrow(dim, from as usize, (to - from) as usize)?;
    let trail = len - lead - (to - from) as usize;
    pad_value(&inner, dim, lead, trail, 0.0)
}

/// Every `step`-th entry of `dim`.
fn subsample(t: &Tensor, dim: usize, step: usize) -> candle_core::Result<Tensor> {
    if step == 1 {
        return Ok(t.clone());
    }
    let n = t.dims()[dim].div_ceil(step);
    let ids: Vec<u32> = (0..n).map(|i| (i * step) as u32).collect();
    t.contiguous()?
        .index_select(&Tensor::new(ids.as_slice(), t.device())?, dim)
}

/// `t` with `step - 1` zeros between neighbours along `dim` (a transposed conv's input
/// at stride 1 equals the strided one on the original).
fn spread(t: &Tensor, dim: usize, step: usize) -> candle_core::Result<Tensor> {
    if step == 1 {
        return Ok(t.clone());
    }
    let n = t.dims()[dim];
    if n == 0 {
        return Ok(t.clone());
    }
    let mut dims = t.dims().to_vec();
    let t = t.unsqueeze(dim + 1)?;
    let t = pad_value(&t, dim + 1, 0, step - 1, 0.0)?;
    dims[dim] = n * step;
    t.reshape(dims)?.narrow(dim, 0, (n - 1) * step + 1)
}

/// 1-D operands as 2-D ones with a unit height: [N, C, L] -> [N, C, 1, L].
fn lift(t: &Tensor, spatial: usize) -> candle_core::Result<Tensor> {
    if spatial == 1 {
        t.unsqueeze(2)
    } else {
        Ok(t.clone())
    }
}

fn lift_vec(v: &[usize], fill: usize) -> Vec<usize> {
    if v.len() == 1 {
        vec![fill, v[0]]
    } else {
        v.to_vec()
    }
}

/// Weights and the one dilation candle's conv takes: axes with a unit kernel ignore theirs,
/// and dilations that still differ are built into the kernel (zeros between its taps).
fn dilated(
    w: &Tensor,
    kernel: &[usize],
    dilations: &[usize],
) -> candle_core::Result<(Tensor, usize)> {
    let used: Vec<usize> = kernel
        .iter()
        .zip(dilations)
        .filter(|(k, _)| **k > 1)
        .map(|(_, d)| *d)
        .collect();
    match used.as_slice() {
        [] => Ok((w.clone(), 1)),
        [d] => Ok((w.clone(), *d)),
        [a, b] if a == b => Ok((w.clone(), *a)),
        _ => {
            let w = spread(w, 2, dilations[0])?;
            Ok((spread(&w, 3, dilations[1])?, 1))
        }
    }
}

fn spatial_rank(ctx: &Ctx, x: &Value, what: &str) -> Result<usize> {
    match x.rank() {
        3 => Ok(1),
        4 => Ok(2),
        r => Err(ctx.unsupported(format!(
            "{what} on {} spatial axes (1 or 2 are)",
            r.saturating_sub(2)
        ))),
    }
}

fn add_bias(ctx: &Ctx, y: Tensor, bias: Option<&Value>) -> Result<Tensor> {
    let Some(b) = bias else { return Ok(y) };
    let c = y.dims()[1];
    let mut shape = vec![1; y.rank()];
    shape[1] = c;
    y.broadcast_add(&b.t.reshape(shape).or_node(ctx)?)
        .or_node(ctx)
}

pub fn conv(ctx: &Ctx, c: &Conv, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let w = required(ctx, inputs, 1)?;
    let n = spatial_rank(ctx, x, "Conv")?;
    if w.rank() != x.rank() {
        return Err(ctx.err(format!(
            "weights of rank {} for an input of rank {}",
            w.rank(),
            x.rank()
        )));
    }
    let g = geometry(ctx, &c.window, &x.dims()[2..], &w.dims()[2..])?;
    let (kernel, dil) = (lift_vec(&g.kernel, 1), lift_vec(&g.dilations, 1));
    let strides = lift_vec(&g.strides, g.strides[0]);
    let (begin, end) = (lift_vec(&g.begin, 0), lift_vec(&g.end, 0));
    let mut xt = lift(&x.t, n).or_node(ctx)?;
    for a in 0..2 {
        xt = pad_value(&xt, 2 + a, begin[a], end[a], 0.0).or_node(ctx)?;
    }
    let (wt, dilation) = lift(&w.t, n)
        .and_then(|w| dilated(&w, &kernel, &dil))
        .or_node(ctx)?;
    let group = c.group.max(1);
    let depthwise = group > 1 && wt.dims()[0] == group && wt.dims()[1] == 1;
    let mut y = if depthwise && xt.dims()[1] == group {
        depthwise_by_shifts(&xt, &wt, (strides[0], strides[1]), dilation).or_node(ctx)?
    } else if strides[0] == strides[1] {
        xt.conv2d(&wt, 0, strides[0], dilation, group)
            .or_node(ctx)?
    } else {
        let y = xt.conv2d(&wt, 0, 1, dilation, group).or_node(ctx)?;
        let y = subsample(&y, 2, strides[0]).or_node(ctx)?;
        subsample(&y, 3, strides[1]).or_node(ctx)?
    };
    if n == 1 {
        y = y.squeeze(2).or_node(ctx)?;
    }
    let y = add_bias(ctx, y, optional(inputs, 2))?;
    let y = match c.activation {
        Some(a) => activation(&y, a).or_node(ctx)?,
        None => y,
    };
    Ok(Value::new(y, x.dtype))
}

/// A depthwise conv (one filter per channel) as the sum over kernel taps of strided views of
/// the padded input times that tap's per-channel weight: candle runs a grouped conv as one
/// conv per group, which for the U-Net's depthwise layers (up to 960 channels) is ~30x slower.
fn depthwise_by_shifts(
    x: &Tensor,
    w: &Tensor,
    strides: (usize, usize),
    dilation: usize,
) -> candle_core::Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let span = |k: usize| (k - 1) * dilation + 1;
    let fit = |len: usize, k: usize, s: usize| {
        len.checked_sub(span(k)).map(|r| r / s + 1).ok_or_else(|| {
            candle_core::Error::Msg(format!("kernel {kh}x{kw} does not fit {h}x{wd}"))
        })
    };
    let (oh, ow) = (fit(h, kh, strides.0)?, fit(wd, kw, strides.1)?);
    let mut acc: Option<Tensor> = None;
    for i in 0..kh {
        for j in 0..kw {
            let v = x
                .narrow(2, i * dilation, (oh - 1) * strides.0 + 1)?
                .narrow(3, j * dilation, (ow - 1) * strides.1 + 1)?;
            let v = subsample(&subsample(&v, 2, strides.0)?, 3, strides.1)?;
            let tap = w.narrow(2, i, 1)?.narrow(3, j, 1)?.reshape((1, c, 1, 1))?;
            let term = v.broadcast_mul(&tap)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("a depthwise kernel without taps".into()))
}

pub fn conv_transpose(ctx: &Ctx, c: &ConvTranspose, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    let w = required(ctx, inputs, 1)?;
    let n = spatial_rank(ctx, x, "ConvTranspose")?;
    let input = &x.dims()[2..];
    let kernel = &w.dims()[2..];
    let strides = ones_or(&c.window.strides, n);
    let dilations = ones_or(&c.window.dilations, n);
    let opad = if c.output_padding.is_empty() {
        vec![0; n]
    } else {
        c.output_padding.clone()
    };
    if kernel.len() != n || strides.len() != n || dilations.len() != n || opad.len() != n {
        return Err(ctx.err("kernel, strides, dilations and output_padding do not fit the input"));
    }
    if strides.contains(&0) || dilations.contains(&0) || input.contains(&0) {
        return Err(ctx.err("strides and dilations must be positive, spatial axes not empty"));
    }
    // The output before cropping: every input position's kernel footprint.
    let full: Vec<usize> = (0..n)
        .map(|i| (input[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1)
        .collect();
    let target: Option<Vec<usize>> = match (&c.output_shape, c.window.auto_pad) {
        (Some(s), _) => Some(s[s.len().saturating_sub(n)..].to_vec()),
        (None, AutoPad::SameUpper | AutoPad::SameLower) => {
            Some((0..n).map(|i| input[i] * strides[i]).collect())
        }
        _ => None,
    };
    let (begin, out): (Vec<i64>, Vec<usize>) = match target {
        Some(t) if t.len() == n => (0..n)
            .map(|i| {
                let total = (full[i] + opad[i]) as i64 - t[i] as i64;
                let total = total.max(0);
                let small = total / 2;
                let b = if c.window.auto_pad == AutoPad::SameUpper {
                    small
                } else {
                    total - small
                };
                (b, t[i])
            })
            .unzip(),
        Some(t) => return Err(ctx.err(format!("output_shape {t:?} does not fit {n} spatial axes"))),
        None => {
            let pads = match c.window.pads.len() {
                0 => vec![0; 2 * n],
                l if l == 2 * n => c.window.pads.clone(),
                _ => {
                    return Err(ctx.err(format!(
                        "pads {:?} do not fit {n} spatial axes",
                        c.window.pads
                    )));
                }
            };
            (0..n)
                .map(|i| {
                    let len = (full[i] + opad[i]).checked_sub(pads[i] + pads[n + i]);
                    len.map(|l| (pads[i] as i64, l))
                        .ok_or_else(|| ctx.err("pads remove the whole output"))
                })
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .unzip()
        }
    };
    let strides2 = lift_vec(&strides, strides[0]);
    let mut xt = lift(&x.t, n).or_node(ctx)?;
    let (wt, dilation) = lift(&w.t, n)
        .and_then(|w| dilated(&w, &lift_vec(kernel, 1), &lift_vec(&dilations, 1)))
        .or_node(ctx)?;
    let stride = if strides2[0] == strides2[1] {
        strides2[0]
    } else {
        for (a, &s) in strides2.iter().enumerate() {
            xt = spread(&xt, 2 + a, s).or_node(ctx)?;
        }
        1
    };
    let group = c.group.max(1);
    let cin = xt.dims()[1];
    if !cin.is_multiple_of(group) || wt.dims()[0] != cin {
        return Err(ctx.err(format!(
            "{cin} input channels do not fit weights {:?} in {group} groups",
            w.dims()
        )));
    }
    let per = cin / group;
    let parts = (0..group)
        .map(|i| {
            let xg = xt.narrow(1, i * per, per)?;
            let wg = wt.narrow(0, i * per, per)?;
            xg.conv_transpose2d(&wg, 0, 0, stride, dilation)
        })
        .collect::<candle_core::Result<Vec<_>>>()
        .or_node(ctx)?;
    let mut y = Tensor::cat(&parts, 1).or_node(ctx)?;
    if n == 1 {
        y = y.squeeze(2).or_node(ctx)?;
    }
    for i in 0..n {
        y = window(&y, 2 + i, begin[i], out[i]).or_node(ctx)?;
    }
    let y = add_bias(ctx, y, optional(inputs, 2))?;
    let y = match c.activation {
        Some(a) => activation(&y, a).or_node(ctx)?,
        None => y,
    };
    Ok(Value::new(y, x.dtype))
}

pub fn pool(ctx: &Ctx, p: &Pool, max: bool, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    if ctx.node.outputs.len() > 1 && !ctx.node.outputs[1].is_empty() {
        return Err(ctx.unsupported("MaxPool's Indices output"));
    }
    if x.rank() < 3 {
        return Err(ctx.err(format!("input of rank {} has no spatial axes", x.rank())));
    }
    let input = &x.dims()[2..];
    let n = input.len();
    let g = geometry(ctx, &p.window, input, &p.window.kernel_shape)?;
    // Extra end padding for ceil mode: the last window may hang over the end.
    let mut extra = vec![0; n];
    for i in 0..n {
        let padded = input[i] + g.begin[i] + g.end[i];
        let span = (g.kernel[i] - 1) * g.dilations[i] + 1;
        if padded < span {
            return Err(ctx.err(format!(
                "window {:?} does not fit input {input:?}",
                g.kernel
            )));
        }
        let r = padded - span;
        let mut out = if p.ceil_mode {
            r.div_ceil(g.strides[i]) + 1
        } else {
            r / g.strides[i] + 1
        };
        // A last window that would start in the end padding is dropped.
        if p.ceil_mode && (out - 1) * g.strides[i] >= input[i] + g.begin[i] {
            out -= 1;
        }
        extra[i] = ((out - 1) * g.strides[i] + span).saturating_sub(padded);
    }
    if n > 2 || g.dilations.iter().any(|&d| d != 1) {
        return pool_by_shifts(ctx, x, &g, &extra, p.count_include_pad, max);
    }
    let (kernel, strides) = (lift_vec(&g.kernel, 1), lift_vec(&g.strides, 1));
    let (begin, end, extra) = (
        lift_vec(&g.begin, 0),
        lift_vec(&g.end, 0),
        lift_vec(&extra, 0),
    );
    let xt = lift(&x.t, n).or_node(ctx)?;
    let k = (kernel[0], kernel[1]);
    let s = (strides[0], strides[1]);
    let y = if max {
        let mut t = xt;
        for a in 0..2 {
            t = pad_value(&t, 2 + a, begin[a], end[a] + extra[a], f64::NEG_INFINITY)
                .or_node(ctx)?;
        }
        t.max_pool2d_with_stride(k, s).or_node(ctx)?
    } else {
        // Average of the padded input over the average of a mask of what counts: the input,
        // and explicit pads when count_include_pad (never ceil mode's overhang).
        let mut t = xt.clone();
        let dims = xt.dims();
        let mut mask =
            Tensor::ones((1, 1, dims[2], dims[3]), xt.dtype(), xt.device()).or_node(ctx)?;
        let pad_weight = if p.count_include_pad { 1.0 } else { 0.0 };
        // Explicit pads on every axis first: an overhang row or column counts nowhere,
        // not even where it crosses another axis's explicit pads.
        for a in 0..2 {
            t = pad_value(&t, 2 + a, begin[a], end[a] + extra[a], 0.0).or_node(ctx)?;
            mask = pad_value(&mask, 2 + a, begin[a], end[a], pad_weight).or_node(ctx)?;
        }
        for (a, &over) in extra.iter().enumerate() {
            mask = pad_value(&mask, 2 + a, 0, over, 0.0).or_node(ctx)?;
        }
        let sum = t.avg_pool2d_with_stride(k, s).or_node(ctx)?;
        let count = mask.avg_pool2d_with_stride(k, s).or_node(ctx)?;
        sum.broadcast_div(&count).or_node(ctx)?
    };
    let y = if n == 1 {
        y.squeeze(2).or_node(ctx)?
    } else {
        y
    };
    Ok(Value::new(y, x.dtype))
}

/// Pooling that candle's 2-D pools cannot do (dilations, three or more spatial axes): the
/// maximum or sum over the kernel's offsets of strided views of the padded input.
fn pool_by_shifts(
    ctx: &Ctx,
    x: &Value,
    g: &Geometry,
    extra: &[usize],
    count_include_pad: bool,
    max: bool,
) -> Result<Value> {
    let n = g.kernel.len();
    let pad_with = if max { f64::NEG_INFINITY } else { 0.0 };
    let mut t = x.t.clone();
    let mut mask = Tensor::ones(&x.dims()[2..], x.t.dtype(), x.t.device()).or_node(ctx)?;
    let pad_weight = if count_include_pad { 1.0 } else { 0.0 };
    // As in `pool`: explicit pads on every axis before any overhang.
    for (a, &over) in extra.iter().enumerate() {
        t = pad_value(&t, 2 + a, g.begin[a], g.end[a] + over, pad_with).or_node(ctx)?;
        mask = pad_value(&mask, a, g.begin[a], g.end[a], pad_weight).or_node(ctx)?;
    }
    for (a, &over) in extra.iter().enumerate() {
        mask = pad_value(&mask, a, 0, over, 0.0).or_node(ctx)?;
    }
    let out: Vec<usize> = (0..n)
        .map(|a| (t.dims()[2 + a] - (g.kernel[a] - 1) * g.dilations[a] - 1) / g.strides[a] + 1)
        .collect();
    // The view of `src` (spatial axes from `first`) seen by kernel offset `k`.
    let shifted = |src: &Tensor, first: usize, k: &[usize]| -> candle_core::Result<Tensor> {
        let mut v = src.clone();
        for a in 0..n {
            let len = (out[a] - 1) * g.strides[a] + 1;
            v = v.narrow(first + a, k[a] * g.dilations[a], len)?;
            v = subsample(&v, first + a, g.strides[a])?;
        }
        Ok(v)
    };
    let mut acc: Option<(Tensor, Tensor)> = None;
    let mut k = vec![0; n];
    loop {
        let v = shifted(&t, 2, &k).or_node(ctx)?;
        let m = shifted(&mask, 0, &k).or_node(ctx)?;
        acc = Some(match acc {
            None => (v, m),
            Some((a, c)) if max => (a.maximum(&v).or_node(ctx)?, c),
            Some((a, c)) => ((a + v).or_node(ctx)?, (c + m).or_node(ctx)?),
        });
        // Next kernel offset, last axis fastest.
        let mut a = n;
        loop {
            if a == 0 {
                let (y, count) = acc.expect("the kernel has at least one offset");
                let y = if max {
                    y
                } else {
                    y.broadcast_div(&count).or_node(ctx)?
                };
                return Ok(Value::new(y, x.dtype));
            }
            a -= 1;
            k[a] += 1;
            if k[a] < g.kernel[a] {
                break;
            }
            k[a] = 0;
        }
    }
}

pub fn global_pool(ctx: &Ctx, max: bool, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    if x.rank() < 3 {
        return Err(ctx.err(format!("input of rank {} has no spatial axes", x.rank())));
    }
    let axes: Vec<usize> = (2..x.rank()).collect();
    let y = if max {
        let mut t = x.t.clone();
        for &a in &axes {
            t = t.max_keepdim(a).or_node(ctx)?;
        }
        t
    } else {
        x.t.mean_keepdim(axes).or_node(ctx)?
    };
    Ok(Value::new(y, x.dtype))
}

pub fn batch_norm(ctx: &Ctx, epsilon: f32, inputs: &Inputs) -> Result<Value> {
    let x = required(ctx, inputs, 0)?;
    if x.rank() < 2 {
        return Err(ctx.err("input needs a channel axis"));
    }
    let mut shape = vec![1; x.rank()];
    shape[1] = x.dims()[1];
    let param = |i: usize| -> Result<Tensor> {
        required(ctx, inputs, i)?
            .t
            .reshape(shape.clone())
            .or_node(ctx)
    };
    let (scale, bias, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
    let std = (var + epsilon as f64).and_then(|v| v.sqrt()).or_node(ctx)?;
    let y =
        x.t.broadcast_sub(&mean)
            .and_then(|t| t.broadcast_div(&std))
            .and_then(|t| t.broadcast_mul(&scale))
            .and_then(|t| t.broadcast_add(&bias))
            .or_node(ctx)?;
    Ok(Value::new(y, x.dtype))
}
