//! Activations, broadcasting arithmetic, comparisons, Where and reductions.

use super::{NodeCtx, i64_tensor};
use crate::ir::{BinaryOp, Op, ReduceOp, UnaryOp};
use crate::{Result, Tensor};

pub(super) fn convert(n: &mut NodeCtx) -> Result<Op> {
    let op_type = n.proto.op_type().to_string();
    let unary = |u| Ok(Op::Unary(u));
    match op_type.as_str() {
        "Relu" => unary(UnaryOp::Relu),
        "Sigmoid" => unary(UnaryOp::Sigmoid),
        "Tanh" => unary(UnaryOp::Tanh),
        "Exp" => unary(UnaryOp::Exp),
        "Log" => unary(UnaryOp::Log),
        "Neg" => unary(UnaryOp::Neg),
        "Abs" => unary(UnaryOp::Abs),
        "Sqrt" => unary(UnaryOp::Sqrt),
        "Reciprocal" => unary(UnaryOp::Reciprocal),
        "Floor" => unary(UnaryOp::Floor),
        "Ceil" => unary(UnaryOp::Ceil),
        "Erf" => unary(UnaryOp::Erf),
        "Not" => unary(UnaryOp::Not),
        "LeakyRelu" => Ok(Op::LeakyRelu {
            alpha: n.attrs.float_or("alpha", 0.01),
        }),
        "Clip" => {
            if n.opset() < 11 {
                let min = n.attrs.float_or("min", f32::MIN);
                let max = n.attrs.float_or("max", f32::MAX);
                n.attr_as_input(1, Tensor::scalar(min));
                n.attr_as_input(2, Tensor::scalar(max));
            }
            Ok(Op::Clip)
        }
        "Where" => Ok(Op::Where),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Equal" | "Less" | "Greater" | "And" | "Or"
        | "Max" | "Min" => {
            if n.opset() < 7 && n.attrs.has("broadcast") {
                return Err(n.unsupported("legacy broadcast attribute (opset < 7)"));
            }
            if matches!(op_type.as_str(), "Max" | "Min") && n.inputs.len() != 2 {
                return Err(n.unsupported(&format!(
                    "{op_type} with {} inputs (only 2)",
                    n.inputs.len()
                )));
            }
            Ok(Op::Binary(match op_type.as_str() {
                "Add" => BinaryOp::Add,
                "Sub" => BinaryOp::Sub,
                "Mul" => BinaryOp::Mul,
                "Div" => BinaryOp::Div,
                "Pow" => BinaryOp::Pow,
                "Max" => BinaryOp::Max,
                "Min" => BinaryOp::Min,
                "Equal" => BinaryOp::Equal,
                "Less" => BinaryOp::Less,
                "Greater" => BinaryOp::Greater,
                "And" => BinaryOp::And,
                _ => BinaryOp::Or,
            }))
        }
        _ => reduce(n, &op_type),
    }
}

fn reduce(n: &mut NodeCtx, op_type: &str) -> Result<Op> {
    let op = match op_type {
        "ReduceSum" => ReduceOp::Sum,
        "ReduceMean" => ReduceOp::Mean,
        "ReduceMax" => ReduceOp::Max,
        "ReduceMin" => ReduceOp::Min,
        _ => ReduceOp::Prod,
    };
    // Axes became an input in opset 13 for ReduceSum and opset 18 for the others.
    let axes_is_input = if op == ReduceOp::Sum {
        n.opset() >= 13
    } else {
        n.opset() >= 18
    };
    if !axes_is_input && let Some(axes) = n.attrs.ints("axes") {
        n.attr_as_input(1, i64_tensor(axes));
    }
    Ok(Op::Reduce {
        op,
        keepdims: n.attrs.int_or("keepdims", 1) != 0,
        noop_with_empty_axes: n.attrs.int_or("noop_with_empty_axes", 0) != 0,
    })
}
