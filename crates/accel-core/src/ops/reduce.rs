//! Reductions, softmax, and the reference forms of BatchNormalization and global pooling.

use super::normalize_axis;
use crate::ir::ReduceOp;
use crate::{Error, Result, Tensor, TensorData, shape_err};

/// Splits `shape` around `axis` into (outer, axis length, inner) element counts.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

pub(super) fn softmax(x: &Tensor, axis: i64, legacy: bool, log: bool) -> Result<Tensor> {
    let mut v = x.to_f32_vec()?;
    softmax_in_place(&mut v, x.shape(), axis, legacy, log)?;
    float_like(x, x.shape().to_vec(), v)
}

/// (Log)Softmax of `v`, laid out as `shape`, in place.
pub fn softmax_in_place(
    v: &mut [f32],
    shape: &[usize],
    axis: i64,
    legacy: bool,
    log: bool,
) -> Result<()> {
    let rank = shape.len().max(1);
    let axis = normalize_axis(axis, rank)?;
    let (outer, len, inner) = if legacy {
        // Opset < 13: flatten to [prod(shape[..axis]), prod(shape[axis..])] and normalise rows.
        let o: usize = shape[..axis].iter().product();
        (o, shape[axis..].iter().product(), 1)
    } else if shape.is_empty() {
        (1, 1, 1)
    } else {
        split_at_axis(shape, axis)
    };
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| o * len * inner + k * inner + i;
            let m = (0..len).map(|k| v[at(k)]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for k in 0..len {
                let e = (v[at(k)] - m).exp();
                v[at(k)] = e;
                sum += e;
            }
            for k in 0..len {
                let idx = at(k);
                v[idx] = if log {
                    (v[idx] / sum).ln()
                } else {
                    v[idx] / sum
                };
            }
        }
    }
    Ok(())
}

/// Wraps f32 results in the dtype of `like` (f32 or f16).
fn float_like(like: &Tensor, shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor> {
    match like.data() {
        TensorData::F16(_) => Tensor::from_vec(
            shape,
            v.into_iter().map(half::f16::from_f32).collect::<Vec<_>>(),
        ),
        TensorData::F32(_) => Tensor::from_vec(shape, v),
        other => Err(Error::Other(format!(
            "expected a float tensor, got {}",
            other.dtype()
        ))),
    }
}

pub(super) fn reduce(
    op: ReduceOp,
    x: &Tensor,
    axes: Option<&Tensor>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> Result<Tensor> {
    let rank = x.rank();
    let axes: Vec<i64> = axes
        .map(|t| t.to_i64_vec())
        .transpose()?
        .unwrap_or_default();
    if axes.is_empty() && noop_with_empty_axes {
        return Ok(x.clone());
    }
    let mut reduced = vec![false; rank];
    if axes.is_empty() {
        reduced.iter_mut().for_each(|r| *r = true);
    }
    for &a in &axes {
        reduced[normalize_axis(a, rank)?] = true;
    }
    let shape = x.shape();
    let out_shape_keep: Vec<usize> = shape
        .iter()
        .zip(&reduced)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let out_len: usize = out_shape_keep.iter().product();
    // Output strides in the input's index space (0 along reduced axes).
    let mut ostride = vec![0usize; rank];
    let mut s = 1;
    for i in (0..rank).rev() {
        if !reduced[i] {
            ostride[i] = s;
            s *= shape[i];
        }
    }
    let count = if out_len == 0 {
        0
    } else {
        x.len() / out_len.max(1)
    };
    let out_shape: Vec<usize> = if keepdims {
        out_shape_keep
    } else {
        shape
            .iter()
            .zip(&reduced)
            .filter(|(_, r)| !**r)
            .map(|(&d, _)| d)
            .collect()
    };
    macro_rules! fold {
        ($v:expr, $init:expr, $f:expr) => {{
            let mut acc = vec![$init; out_len];
            let mut idx = vec![0usize; rank];
            let mut o = 0usize;
            for &val in $v.iter() {
                acc[o] = $f(acc[o], val);
                for d in (0..rank).rev() {
                    idx[d] += 1;
                    o += ostride[d];
                    if idx[d] < shape[d] {
                        break;
                    }
                    o -= ostride[d] * shape[d];
                    idx[d] = 0;
                }
            }
            acc
        }};
    }
    match x.data() {
        // int32 shape arithmetic (tf2onnx emits it) goes through i64.
        TensorData::I32(_) => {
            let wide = Tensor::from_vec(shape.to_vec(), x.to_i64_vec()?)?;
            let axes_t = (!axes.is_empty())
                .then(|| Tensor::from_vec(vec![axes.len()], axes.clone()))
                .transpose()?;
            super::layout::cast(
                &reduce(op, &wide, axes_t.as_ref(), keepdims, noop_with_empty_axes)?,
                crate::DType::I32,
            )
        }
        TensorData::I64(v) => {
            let acc = match op {
                ReduceOp::Sum | ReduceOp::Mean => {
                    fold!(v, 0i64, |a: i64, b: i64| a.wrapping_add(b))
                }
                ReduceOp::Prod => fold!(v, 1i64, |a: i64, b: i64| a.wrapping_mul(b)),
                ReduceOp::Max => fold!(v, i64::MIN, |a: i64, b: i64| a.max(b)),
                ReduceOp::Min => fold!(v, i64::MAX, |a: i64, b: i64| a.min(b)),
            };
            let acc = if op == ReduceOp::Mean {
                acc.into_iter().map(|a| a / count.max(1) as i64).collect()
            } else {
                acc
            };
            Tensor::from_vec(out_shape, acc)
        }
        TensorData::F32(_) | TensorData::F16(_) => {
            let v = x.to_f32_vec()?;
            let acc = match op {
                ReduceOp::Sum | ReduceOp::Mean => fold!(v, 0f32, |a: f32, b: f32| a + b),
                ReduceOp::Prod => fold!(v, 1f32, |a: f32, b: f32| a * b),
                ReduceOp::Max => fold!(
                    v,
                    f32::NEG_INFINITY,
                    |a: f32, b: f32| if b > a || b.is_nan() { b } else { a }
                ),
                ReduceOp::Min => fold!(v, f32::INFINITY, |a: f32, b: f32| if b < a || b.is_nan() {
                    b
                } else {
                    a
                }),
            };
            let acc = if op == ReduceOp::Mean {
                acc.into_iter().map(|a| a / count as f32).collect()
            } else {
                acc
            };
            float_like(x, out_shape, acc)
        }
        other => Err(Error::Other(format!(
            "reductions are not defined for {}",
            other.dtype()
        ))),
    }
}

/// Inference BatchNormalization over axis 1: y = (x - mean) / sqrt(var + eps) * scale + bias.
pub(super) fn batch_norm(
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    if x.rank() < 2 {
        return Err(shape_err!(
            "BatchNormalization needs rank >= 2, got {:?}",
            x.shape()
        ));
    }
    let c = x.shape()[1];
    let (s, b, m, vr) = (
        scale.to_f32_vec()?,
        bias.to_f32_vec()?,
        mean.to_f32_vec()?,
        var.to_f32_vec()?,
    );
    if [s.len(), b.len(), m.len(), vr.len()]
        .iter()
        .any(|&l| l != c)
    {
        return Err(shape_err!(
            "BatchNormalization parameters must have {c} elements (channels)"
        ));
    }
    let inner: usize = x.shape()[2..].iter().product();
    let mut v = x.to_f32_vec()?;
    for (i, chunk) in v.chunks_mut(inner.max(1)).enumerate() {
        let ch = i % c;
        let k = s[ch] / (vr[ch] + eps).sqrt();
        let off = b[ch] - m[ch] * k;
        chunk.iter_mut().for_each(|a| *a = *a * k + off);
    }
    float_like(x, x.shape().to_vec(), v)
}

pub(super) fn global_pool(x: &Tensor, max: bool) -> Result<Tensor> {
    if x.rank() < 3 {
        return Err(shape_err!(
            "global pooling needs [N, C, spatial...], got {:?}",
            x.shape()
        ));
    }
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let inner: usize = x.shape()[2..].iter().product();
    let v = x.to_f32_vec()?;
    let out: Vec<f32> = v
        .chunks(inner.max(1))
        .take(n * c)
        .map(|ch| {
            if max {
                ch.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                ch.iter().sum::<f32>() / inner as f32
            }
        })
        .collect();
    let mut shape = vec![n, c];
    shape.extend(std::iter::repeat_n(1, x.rank() - 2));
    float_like(x, shape, out)
}
