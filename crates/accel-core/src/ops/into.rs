//! f32 light ops written into a caller's buffer: the same routines `eval` uses, for backends
//! that plan their own memory (the CPU backend's arena). The caller knows the output shape
//! (from its memory plan); anything not covered here answers `Ok(false)` and is evaluated
//! with [`eval`](super::eval) instead.

use super::broadcast::{broadcast_shapes, f32_op, zip_broadcast_into};
use super::layout::{
    Slices, broadcast_src_strides, channels_first_into, concat_into, gather_strided_into,
    transpose_strides,
};
use super::reduce::softmax_in_place;
use super::unary::{clip, f32_fn};
use super::{annotate, normalize_axis};
use crate::ir::{Node, Op};
use crate::{DType, Result, TensorView};

/// Evaluates `node` into `out` (exactly `out_shape`'s element count) when its data inputs are
/// f32 and the op is one of the layout and elementwise ops below. Ok(false) leaves `out`
/// untouched.
pub fn eval_f32_into(
    node: &Node,
    inputs: &[Option<TensorView>],
    out_shape: &[usize],
    out: &mut [f32],
) -> Result<bool> {
    eval_inner(node, inputs, out_shape, out).map_err(|e| annotate(node, e))
}

fn eval_inner(
    node: &Node,
    inputs: &[Option<TensorView>],
    out_shape: &[usize],
    out: &mut [f32],
) -> Result<bool> {
    let f32_in = |i: usize| -> Option<(&[f32], &[usize])> {
        let v = inputs.get(i)?.as_ref()?;
        Some((v.as_slice::<f32>().ok()?, v.shape()))
    };
    let Some((x, xs)) = f32_in(0) else {
        return Ok(false);
    };
    if out.len() != crate::numel(out_shape) {
        return Err(crate::shape_err!(
            "output buffer holds {} values for shape {out_shape:?}",
            out.len()
        ));
    }
    let elementwise = matches!(
        node.op,
        Op::Unary(_) | Op::Clip | Op::LeakyRelu { .. } | Op::Softmax { .. } | Op::LogSoftmax { .. }
    );
    if elementwise && xs != out_shape {
        return Ok(false);
    }
    match &node.op {
        // The data is unchanged; only the shape (the caller's) differs.
        Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Flatten { .. } | Op::Identity
            if x.len() == out.len() =>
        {
            out.copy_from_slice(x)
        }
        Op::Unary(u) => match f32_fn(*u) {
            Some(f) => out.iter_mut().zip(x).for_each(|(o, &a)| *o = f(a)),
            None => return Ok(false),
        },
        Op::Clip => {
            let bound = |i: usize, default: f32| match inputs.get(i) {
                None | Some(None) => Some(default),
                Some(Some(_)) => f32_in(i).and_then(|(v, _)| v.first().copied()),
            };
            match (bound(1, f32::NEG_INFINITY), bound(2, f32::INFINITY)) {
                (Some(lo), Some(hi)) => out
                    .iter_mut()
                    .zip(x)
                    .for_each(|(o, &a)| *o = clip(a, lo, hi)),
                _ => return Ok(false),
            }
        }
        Op::LeakyRelu { alpha } => out
            .iter_mut()
            .zip(x)
            .for_each(|(o, &a)| *o = if a < 0.0 { alpha * a } else { a }),
        Op::Binary(b) => match (f32_op(*b), f32_in(1)) {
            (Some(f), Some((y, ys))) if broadcast_shapes(xs, ys)? == out_shape => {
                zip_broadcast_into(x, xs, y, ys, out_shape, out, f)
            }
            _ => return Ok(false),
        },
        Op::Softmax { axis, legacy } | Op::LogSoftmax { axis, legacy } => {
            out.copy_from_slice(x);
            let log = matches!(node.op, Op::LogSoftmax { .. });
            softmax_in_place(out, xs, *axis, *legacy, log)?;
        }
        Op::Transpose { perm } => {
            let perm = perm
                .clone()
                .unwrap_or_else(|| (0..xs.len()).rev().collect());
            let (shape, src_strides) = transpose_strides(xs, &perm)?;
            if shape != out_shape {
                return Ok(false);
            }
            if !channels_first_into(x, xs, &perm, out) {
                gather_strided_into(x, out_shape, &src_strides, 0, out);
            }
        }
        Op::Expand if broadcast_shapes(xs, out_shape)? == out_shape => {
            gather_strided_into(x, out_shape, &broadcast_src_strides(xs, out_shape), 0, out)
        }
        Op::Concat { axis } => {
            let parts: Option<Vec<(&[f32], &[usize])>> = (0..inputs.len())
                .filter(|&i| inputs[i].is_some())
                .map(f32_in)
                .collect();
            let axis = normalize_axis(*axis, xs.len())?;
            let fits = |parts: &[(&[f32], &[usize])]| {
                parts.iter().map(|(_, s)| s[axis]).sum::<usize>() == out_shape[axis]
                    && parts.iter().all(|(_, s)| {
                        s.len() == out_shape.len()
                            && s.iter()
                                .zip(out_shape)
                                .enumerate()
                                .all(|(i, (a, b))| i == axis || a == b)
                    })
            };
            match parts {
                Some(parts) if fits(&parts) => concat_into(&parts, axis, out),
                _ => return Ok(false),
            }
        }
        Op::Slice => {
            let ints = |i: usize| -> Option<Option<Vec<i64>>> {
                match inputs.get(i) {
                    None | Some(None) => Some(None),
                    Some(Some(v)) => int_values(v).map(Some),
                }
            };
            let (Some(Some(starts)), Some(Some(ends)), Some(axes), Some(steps)) =
                (ints(1), ints(2), ints(3), ints(4))
            else {
                return Ok(false);
            };
            let s = Slices::new(xs, &starts, &ends, axes.as_deref(), steps.as_deref())?;
            if s.out_shape != out_shape {
                return Ok(false);
            }
            let (base, src_strides) = s.src_strides(xs);
            gather_strided_into(x, &s.out_shape, &src_strides, base, out);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn int_values(v: &TensorView) -> Option<Vec<i64>> {
    match v.dtype() {
        DType::I64 => v.as_slice::<i64>().ok().map(<[i64]>::to_vec),
        DType::I32 => v
            .as_slice::<i32>()
            .ok()
            .map(|s| s.iter().map(|&a| a as i64).collect()),
        _ => None,
    }
}
