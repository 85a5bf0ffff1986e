//! accel's operators on candle tensors, one module per family. Every op is written against
//! candle's own kernels (conv, matmul, pooling, reductions, elementwise): nothing here calls
//! accel's CPU kernels, so the two backends are independent implementations of the IR.

mod conv;
mod dense;
mod elementwise;
mod layout;
mod lstm;
mod reduce;
mod resize;

use crate::value::{Value, candle_err};
use accel_core::ir::{Node, Op, UnaryOp};
use accel_core::{Error, Result};
use candle_core::Device;

/// What an op sees of the graph while it runs.
pub struct Ctx<'a> {
    pub node: &'a Node,
    pub device: &'a Device,
}

impl Ctx<'_> {
    /// An error about this node that a person can act on.
    pub fn err(&self, message: impl Into<String>) -> Error {
        Error::InvalidNode {
            node: self.node.name.clone(),
            op_type: self.node.op.name().to_string(),
            message: message.into(),
        }
    }

    /// The node's operator is valid ONNX but candle offers no way to run this form of it.
    pub fn unsupported(&self, what: impl std::fmt::Display) -> Error {
        self.err(format!("the candle backend does not run {what}"))
    }
}

/// Inputs of one node by position; `None` where an optional input is left out.
pub type Inputs<'a> = [Option<&'a Value>];

/// Input `i`, which the op requires.
pub fn required<'a>(ctx: &Ctx, inputs: &Inputs<'a>, i: usize) -> Result<&'a Value> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| ctx.err(format!("input {i} is required")))
}

/// Input `i` if present.
pub fn optional<'a>(inputs: &Inputs<'a>, i: usize) -> Option<&'a Value> {
    inputs.get(i).copied().flatten()
}

/// An ONNX axis (negative counts from the end) as an index into `rank` dims.
pub fn axis(ctx: &Ctx, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r.max(1) {
        return Err(ctx.err(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Whether the candle backend has an implementation of `op` (some attribute combinations
/// are still refused when the graph is compiled or run, with the reason).
pub fn supports(op: &Op) -> bool {
    !matches!(op, Op::Binary(accel_core::ir::BinaryOp::Pow))
}

/// Runs one node on candle.
pub fn eval(ctx: &Ctx, inputs: &Inputs) -> Result<Vec<Value>> {
    let out = match &ctx.node.op {
        Op::Conv(c) => vec![conv::conv(ctx, c, inputs)?],
        Op::ConvTranspose(c) => vec![conv::conv_transpose(ctx, c, inputs)?],
        Op::MaxPool(p) => vec![conv::pool(ctx, p, true, inputs)?],
        Op::AveragePool(p) => vec![conv::pool(ctx, p, false, inputs)?],
        Op::GlobalAveragePool => vec![conv::global_pool(ctx, false, inputs)?],
        Op::GlobalMaxPool => vec![conv::global_pool(ctx, true, inputs)?],
        Op::BatchNormalization { epsilon } => vec![conv::batch_norm(ctx, *epsilon, inputs)?],
        Op::MatMul { activation } => vec![dense::matmul(ctx, *activation, inputs)?],
        Op::Gemm(g) => vec![dense::gemm(ctx, g, inputs)?],
        Op::Lstm(l) => lstm::lstm(ctx, l, inputs)?,
        Op::Unary(UnaryOp::Not) => vec![elementwise::not(ctx, inputs)?],
        Op::Unary(u) => vec![elementwise::unary(ctx, *u, inputs)?],
        Op::Clip => vec![elementwise::clip(ctx, inputs)?],
        Op::LeakyRelu { alpha } => vec![elementwise::leaky_relu(ctx, *alpha, inputs)?],
        Op::Binary(b) => vec![elementwise::binary(ctx, *b, inputs)?],
        Op::Where => vec![elementwise::where_(ctx, inputs)?],
        Op::Softmax { axis, legacy } => vec![reduce::softmax(ctx, *axis, *legacy, false, inputs)?],
        Op::LogSoftmax { axis, legacy } => {
            vec![reduce::softmax(ctx, *axis, *legacy, true, inputs)?]
        }
        Op::Reduce {
            op,
            keepdims,
            noop_with_empty_axes,
        } => vec![reduce::reduce(
            ctx,
            *op,
            *keepdims,
            *noop_with_empty_axes,
            inputs,
        )?],
        Op::Concat { axis } => vec![layout::concat(ctx, *axis, inputs)?],
        Op::Split { axis, num_outputs } => layout::split(ctx, *axis, *num_outputs, inputs)?,
        Op::Reshape { allowzero } => vec![layout::reshape(ctx, *allowzero, inputs)?],
        Op::Transpose { perm } => vec![layout::transpose(ctx, perm.as_deref(), inputs)?],
        Op::Squeeze => vec![layout::squeeze(ctx, inputs)?],
        Op::Unsqueeze => vec![layout::unsqueeze(ctx, inputs)?],
        Op::Flatten { axis } => vec![layout::flatten(ctx, *axis, inputs)?],
        Op::Shape { start, end } => vec![layout::shape(ctx, *start, *end, inputs)?],
        Op::Gather { axis } => vec![layout::gather(ctx, *axis, inputs)?],
        Op::Slice => vec![layout::slice(ctx, inputs)?],
        Op::Expand => vec![layout::expand(ctx, inputs)?],
        Op::Tile => vec![layout::tile(ctx, inputs)?],
        Op::Pad { mode } => vec![layout::pad(ctx, *mode, inputs)?],
        Op::ConstantOfShape { value } => vec![layout::constant_of_shape(ctx, value, inputs)?],
        Op::Range => vec![layout::range(ctx, inputs)?],
        Op::Cast { to } => vec![layout::cast(ctx, *to, inputs)?],
        Op::Identity => vec![required(ctx, inputs, 0)?.clone()],
        Op::Dropout => layout::dropout(ctx, inputs)?,
        Op::Resize(r) => vec![resize::resize(ctx, r, inputs)?],
    };
    Ok(out)
}

/// candle's errors inside an op, attributed to its node.
pub trait OrNode<T> {
    fn or_node(self, ctx: &Ctx) -> Result<T>;
}

impl<T> OrNode<T> for candle_core::Result<T> {
    fn or_node(self, ctx: &Ctx) -> Result<T> {
        self.map_err(|e| ctx.err(candle_err(e).to_string()))
    }
}
