//! NodeProto -> IR node, one module per operator family.

mod conv;
mod elementwise;
mod layout;
mod nn;

use super::attrs::Attrs;
use super::proto::NodeProto;
use super::tensor::tensor_from_proto;
use crate::ir::{Graph, Node};
use crate::{Error, Result, Tensor};
use std::sync::Arc;

pub(crate) struct ImportCtx<'g> {
    pub opset: i64,
    pub graph: &'g mut Graph,
}

pub(crate) enum Converted {
    Node(Node),
    /// A Constant node: its output becomes a graph constant.
    Constant(String, Tensor),
}

/// What a family converter sees of one node.
pub(crate) struct NodeCtx<'a, 'g> {
    pub proto: &'a NodeProto,
    pub name: &'a str,
    pub attrs: Attrs<'a>,
    pub inputs: Vec<String>,
    pub import: &'a mut ImportCtx<'g>,
}

impl NodeCtx<'_, '_> {
    pub fn opset(&self) -> i64 {
        self.import.opset
    }

    pub fn err(&self, message: impl Into<String>) -> Error {
        self.attrs.err(message)
    }

    /// Adds a constant that stands in for an attribute of an older opset, as input `index`.
    pub fn attr_as_input(&mut self, index: usize, t: Tensor) {
        let name = self
            .import
            .graph
            .fresh_name(&format!("{}_in{index}", self.name));
        self.import
            .graph
            .constants
            .insert(name.clone(), Arc::new(t));
        if self.inputs.len() <= index {
            self.inputs.resize(index + 1, String::new());
        }
        self.inputs[index] = name;
    }

    pub fn unsupported(&self, what: &str) -> Error {
        self.err(format!("{what} is not supported"))
    }
}

pub(crate) fn convert(proto: &NodeProto, name: &str, ctx: &mut ImportCtx) -> Result<Converted> {
    let domain = proto.domain();
    let op_type = proto.op_type();
    if !(domain.is_empty() || domain == "ai.onnx") {
        return Err(unsupported(proto, name, ctx.opset));
    }
    if op_type == "Constant" {
        let out = proto.output.first().cloned().unwrap_or_default();
        return Ok(Converted::Constant(out, constant(proto, name)?));
    }
    let mut node = NodeCtx {
        proto,
        name,
        attrs: Attrs::new(proto),
        inputs: proto.input.clone(),
        import: ctx,
    };
    let op = match op_type {
        "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" | "GlobalAveragePool"
        | "GlobalMaxPool" | "BatchNormalization" => conv::convert(&mut node)?,
        "MatMul" | "Gemm" | "LSTM" | "Softmax" | "LogSoftmax" => nn::convert(&mut node)?,
        "Relu" | "Sigmoid" | "Tanh" | "Exp" | "Log" | "Neg" | "Abs" | "Sqrt" | "Reciprocal"
        | "Floor" | "Ceil" | "Erf" | "Not" | "Clip" | "LeakyRelu" | "Add" | "Sub" | "Mul"
        | "Div" | "Pow" | "Max" | "Min" | "Equal" | "Less" | "Greater" | "And" | "Or" | "Where"
        | "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" => {
            elementwise::convert(&mut node)?
        }
        "Concat" | "Split" | "Reshape" | "Transpose" | "Squeeze" | "Unsqueeze" | "Flatten"
        | "Shape" | "Gather" | "Slice" | "Expand" | "Tile" | "Pad" | "Resize" | "Upsample"
        | "Range" | "ConstantOfShape" | "Cast" | "Identity" | "Dropout" => {
            layout::convert(&mut node)?
        }
        _ => return Err(unsupported(proto, name, node.import.opset)),
    };
    Ok(Converted::Node(Node {
        name: name.to_string(),
        op,
        inputs: node.inputs,
        outputs: proto.output.clone(),
    }))
}

fn unsupported(proto: &NodeProto, name: &str, opset: i64) -> Error {
    Error::UnsupportedOp {
        op_type: proto.op_type().to_string(),
        domain: if proto.domain().is_empty() {
            "ai.onnx".into()
        } else {
            proto.domain().to_string()
        },
        opset,
        node: name.to_string(),
    }
}

fn constant(proto: &NodeProto, name: &str) -> Result<Tensor> {
    let a = Attrs::new(proto);
    if let Some(t) = a.tensor("value") {
        return tensor_from_proto(t, None);
    }
    if let Some(v) = a.float("value_float") {
        return Ok(Tensor::scalar(v));
    }
    if let Some(v) = a.floats("value_floats") {
        return Tensor::from_vec(vec![v.len()], v);
    }
    if let Some(v) = a.int("value_int") {
        return Ok(Tensor::scalar(v));
    }
    if let Some(v) = a.ints("value_ints") {
        return Tensor::from_vec(vec![v.len()], v);
    }
    Err(Error::InvalidNode {
        node: name.to_string(),
        op_type: "Constant".into(),
        message: "only tensor, float(s) and int(s) values are supported".into(),
    })
}

/// Shared by converters: the kind of value a list attribute turns into when it becomes an input.
pub(crate) fn i64_tensor(v: Vec<i64>) -> Tensor {
    let n = v.len();
    Tensor::from_vec(vec![n], v).expect("length matches")
}
