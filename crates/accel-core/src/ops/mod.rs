//! Operator semantics that live in core: shape inference for every op, and reference
//! evaluation of the light ops (shape arithmetic, layout, elementwise, reductions). Constant
//! folding runs on the latter; backends may reuse them for ops that are not worth a kernel.
//! Heavy ops (Conv, ConvTranspose, pools, MatMul, Gemm, LSTM) are evaluated by backends.

mod broadcast;
mod into;
mod layout;
mod reduce;
mod resize;
mod shapes;
mod unary;

pub use broadcast::{broadcast_shapes, eval_binary, eval_where};
pub use into::eval_f32_into;
pub use layout::{
    Slices, broadcast_src_strides, cast, concat, reshape_shape, squeeze_shape, transpose,
    transpose_strides, unsqueeze_shape,
};
pub use shapes::{
    ResolvedWindow, TypeInfo, infer, pool_output_size, resolve_conv_transpose, resolve_window,
    spatial_2d,
};
pub use unary::erf;

pub(crate) use layout::shape_of;

use crate::ir::{Node, Op};
use crate::{Error, Result, Tensor};

/// Normalises a possibly negative axis against `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(Error::Shape(format!(
            "axis {axis} is out of range for rank {rank}"
        )));
    }
    Ok(a as usize)
}

/// Normalises Flatten's axis, which ranges over [-rank, rank] (negative counts from rank).
pub(crate) fn flatten_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis > r {
        return Err(Error::Shape(format!(
            "Flatten axis {axis} is out of range for rank {rank}"
        )));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Whether core can evaluate this op (constant folding and backend fallbacks use it).
pub fn can_eval(op: &Op) -> bool {
    !matches!(
        op,
        Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::MatMul { .. }
            | Op::Gemm(_)
            | Op::Lstm(_)
    )
}

fn input<'a>(node: &Node, inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| Error::node(node, format!("input {i} is required")))
}

fn opt_input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// Evaluates a light op on concrete tensors. `inputs[i]` is `None` for an absent optional input.
pub fn eval(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = || input(node, inputs, 0);
    let wrap = |r: Result<Tensor>| r.map(|t| vec![t]).map_err(|e| annotate(node, e));
    match &node.op {
        Op::Unary(u) => wrap(unary::eval_unary(*u, x()?)),
        Op::Clip => wrap(unary::eval_clip(
            x()?,
            opt_input(inputs, 1),
            opt_input(inputs, 2),
        )),
        Op::LeakyRelu { alpha } => wrap(unary::eval_leaky_relu(x()?, *alpha)),
        Op::Binary(b) => wrap(broadcast::eval_binary(*b, x()?, input(node, inputs, 1)?)),
        Op::Where => wrap(broadcast::eval_where(
            x()?,
            input(node, inputs, 1)?,
            input(node, inputs, 2)?,
        )),
        Op::Softmax { axis, legacy } => wrap(reduce::softmax(x()?, *axis, *legacy, false)),
        Op::LogSoftmax { axis, legacy } => wrap(reduce::softmax(x()?, *axis, *legacy, true)),
        Op::Reduce {
            op,
            keepdims,
            noop_with_empty_axes,
        } => wrap(reduce::reduce(
            *op,
            x()?,
            opt_input(inputs, 1),
            *keepdims,
            *noop_with_empty_axes,
        )),
        Op::BatchNormalization { epsilon } => wrap(reduce::batch_norm(
            x()?,
            input(node, inputs, 1)?,
            input(node, inputs, 2)?,
            input(node, inputs, 3)?,
            input(node, inputs, 4)?,
            *epsilon,
        )),
        Op::GlobalAveragePool => wrap(reduce::global_pool(x()?, false)),
        Op::GlobalMaxPool => wrap(reduce::global_pool(x()?, true)),
        Op::Resize(r) => wrap(resize::resize(
            r,
            x()?,
            opt_input(inputs, 2),
            opt_input(inputs, 3),
        )),
        Op::Split { axis, num_outputs } => {
            layout::split(x()?, *axis, opt_input(inputs, 1), *num_outputs)
                .map_err(|e| annotate(node, e))
        }
        Op::Dropout => {
            training_dropout_check(node, inputs)?;
            let x = x()?.clone();
            let mut out = vec![x];
            if node.outputs.len() > 1 {
                let shape = out[0].shape().to_vec();
                let n = out[0].len();
                out.push(Tensor::from_vec(shape, vec![true; n])?);
            }
            Ok(out)
        }
        op if can_eval(op) => wrap(layout::eval(node, inputs)),
        op => Err(Error::node(
            node,
            format!("{} is evaluated by backends, not by core", op.name()),
        )),
    }
}

/// Dropout with `training_mode` true drops at random: refuse it rather than pass data through.
fn training_dropout_check(node: &Node, inputs: &[Option<&Tensor>]) -> Result<()> {
    let training = opt_input(inputs, 2)
        .map(|t| t.to_i64_vec())
        .transpose()?
        .is_some_and(|v| v.iter().any(|&b| b != 0));
    let ratio = opt_input(inputs, 1)
        .map(|t| t.to_f32_vec())
        .transpose()?
        .and_then(|v| v.first().copied())
        .unwrap_or(0.5);
    if training && ratio > 0.0 {
        return Err(Error::node(
            node,
            format!(
                "Dropout in training mode (ratio {ratio}) is random; accel runs inference only (export the model in eval mode)"
            ),
        ));
    }
    Ok(())
}

/// Adds the node's name to an error raised while evaluating it.
fn annotate(node: &Node, e: Error) -> Error {
    match e {
        Error::InvalidNode { .. } => e,
        other => Error::node(node, other.to_string()),
    }
}
