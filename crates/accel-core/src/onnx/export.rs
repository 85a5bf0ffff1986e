//! Graph -> ModelProto: accel's optimized graph as an ONNX model, so another runtime (ONNX
//! Runtime) can run exactly what accel runs. Exported at opset 18, where every input-form the
//! importer normalises to exists; fused activations become separate nodes again.

use super::proto::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_shape_proto::Dimension, tensor_shape_proto::dimension,
};
use super::tensor::tensor_to_proto;
use crate::ir::{
    Activation, AutoPad, CoordTransform, Dim, Direction, Graph, NearestMode, Node, Op, PadMode,
    ResizeMode, ValueInfo, Window,
};
use crate::{Error, Result, Tensor};

pub const EXPORT_OPSET: i64 = 18;

/// Serialized ModelProto of `graph`.
pub fn export_model(graph: &Graph) -> Result<Vec<u8>> {
    Ok(prost::Message::encode_to_vec(&graph_to_model(graph)?))
}

pub fn graph_to_model(graph: &Graph) -> Result<ModelProto> {
    let mut out = Exporter {
        nodes: Vec::new(),
        extra: Vec::new(),
    };
    for n in &graph.nodes {
        out.node(n)?;
    }
    let mut initializer: Vec<proto::TensorProto> = graph
        .constants
        .iter()
        .map(|(name, t)| tensor_to_proto(name, t))
        .collect();
    initializer.sort_by(|a, b| a.name.cmp(&b.name));
    initializer.extend(out.extra.iter().map(|(name, t)| tensor_to_proto(name, t)));
    Ok(ModelProto {
        ir_version: Some(8),
        producer_name: Some("accel".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(EXPORT_OPSET),
        }],
        graph: Some(GraphProto {
            name: Some(if graph.name.is_empty() {
                "accel".into()
            } else {
                graph.name.clone()
            }),
            node: out.nodes,
            initializer,
            input: graph.inputs.iter().map(value_info).collect(),
            output: graph.outputs.iter().map(value_info).collect(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn value_info(v: &ValueInfo) -> ValueInfoProto {
    let shape = v.shape.as_ref().map(|dims| proto::TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::Known(n) => dimension::Value::DimValue(*n as i64),
                    Dim::Sym(s) => dimension::Value::DimParam(s.clone()),
                }),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(v.name.clone()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(v.dtype.onnx_code()),
                    shape,
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}
fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}
fn ints(name: &str, v: impl IntoIterator<Item = i64>) -> AttributeProto {
    AttributeProto {
        ints: v.into_iter().collect(),
        ..attr(name, AttributeType::Ints)
    }
}
fn usizes(name: &str, v: &[usize]) -> AttributeProto {
    ints(name, v.iter().map(|&x| x as i64))
}
fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, AttributeType::Float)
    }
}
fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: Some(v.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}
fn tensor(name: &str, t: &Tensor) -> AttributeProto {
    AttributeProto {
        t: Some(tensor_to_proto("", t)),
        ..attr(name, AttributeType::Tensor)
    }
}

fn window(w: &Window) -> Vec<AttributeProto> {
    let mut a = Vec::new();
    if !w.kernel_shape.is_empty() {
        a.push(usizes("kernel_shape", &w.kernel_shape));
    }
    if !w.strides.is_empty() {
        a.push(usizes("strides", &w.strides));
    }
    if !w.dilations.is_empty() {
        a.push(usizes("dilations", &w.dilations));
    }
    match w.auto_pad {
        AutoPad::NotSet if !w.pads.is_empty() => a.push(usizes("pads", &w.pads)),
        AutoPad::NotSet => {}
        AutoPad::SameUpper => a.push(string("auto_pad", "SAME_UPPER")),
        AutoPad::SameLower => a.push(string("auto_pad", "SAME_LOWER")),
        AutoPad::Valid => a.push(string("auto_pad", "VALID")),
    }
    a
}

struct Exporter {
    nodes: Vec<NodeProto>,
    /// Constants the export adds (Clip bounds of fused activations).
    extra: Vec<(String, Tensor)>,
}

impl Exporter {
    fn push(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            name: Some(name.into()),
            op_type: Some(op_type.into()),
            input: inputs,
            output: outputs,
            attribute,
            ..Default::default()
        });
    }

    fn node(&mut self, n: &Node) -> Result<()> {
        let mut outputs = n.outputs.clone();
        let act = n.op.fused_activation();
        // A fused activation writes the node's real output; the base op writes a temporary.
        let pre = format!(
            "{}__pre_activation",
            n.outputs.first().map(String::as_str).unwrap_or(&n.name)
        );
        if act.is_some() {
            outputs[0] = pre.clone();
        }
        let (op_type, attrs): (&str, Vec<AttributeProto>) = match &n.op {
            Op::Conv(c) => (
                "Conv",
                [window(&c.window), vec![int("group", c.group as i64)]].concat(),
            ),
            Op::ConvTranspose(c) => {
                let mut a = window(&c.window);
                a.push(int("group", c.group as i64));
                if !c.output_padding.is_empty() {
                    a.push(usizes("output_padding", &c.output_padding));
                }
                if let Some(s) = &c.output_shape {
                    a.push(usizes("output_shape", s));
                }
                ("ConvTranspose", a)
            }
            Op::MaxPool(p) | Op::AveragePool(p) => {
                let mut a = window(&p.window);
                a.push(int("ceil_mode", p.ceil_mode as i64));
                if matches!(n.op, Op::AveragePool(_)) {
                    a.push(int("count_include_pad", p.count_include_pad as i64));
                }
                (n.op.name(), a)
            }
            Op::BatchNormalization { epsilon } => {
                ("BatchNormalization", vec![float("epsilon", *epsilon)])
            }
            Op::MatMul { .. } => ("MatMul", vec![]),
            Op::Gemm(g) => (
                "Gemm",
                vec![
                    float("alpha", g.alpha),
                    float("beta", g.beta),
                    int("transA", g.trans_a as i64),
                    int("transB", g.trans_b as i64),
                ],
            ),
            Op::Lstm(l) => {
                let dir = match l.direction {
                    Direction::Forward => "forward",
                    Direction::Reverse => "reverse",
                    Direction::Bidirectional => "bidirectional",
                };
                let mut a = vec![
                    int("hidden_size", l.hidden_size as i64),
                    string("direction", dir),
                    int("layout", l.layout as i64),
                ];
                a.push(int("input_forget", l.input_forget as i64));
                if let Some(c) = l.clip {
                    a.push(float("clip", c));
                }
                ("LSTM", a)
            }
            Op::LeakyRelu { alpha } => ("LeakyRelu", vec![float("alpha", *alpha)]),
            Op::Softmax { axis, legacy } | Op::LogSoftmax { axis, legacy } => {
                let ty = n.op.name();
                if *legacy {
                    return self.legacy_softmax(n, ty, *axis);
                }
                (ty, vec![int("axis", *axis)])
            }
            Op::Reduce {
                keepdims,
                noop_with_empty_axes,
                ..
            } => (
                n.op.name(),
                vec![
                    int("keepdims", *keepdims as i64),
                    int("noop_with_empty_axes", *noop_with_empty_axes as i64),
                ],
            ),
            Op::Concat { axis } => ("Concat", vec![int("axis", *axis)]),
            Op::Split { axis, num_outputs } => {
                let mut a = vec![int("axis", *axis)];
                if n.input(1).is_none() {
                    a.push(int("num_outputs", *num_outputs as i64));
                }
                ("Split", a)
            }
            Op::Reshape { allowzero } => ("Reshape", vec![int("allowzero", *allowzero as i64)]),
            Op::Transpose { perm } => (
                "Transpose",
                perm.as_ref()
                    .map(|p| vec![usizes("perm", p)])
                    .unwrap_or_default(),
            ),
            Op::Flatten { axis } => ("Flatten", vec![int("axis", *axis)]),
            Op::Shape { start, end } => {
                let mut a = vec![int("start", *start)];
                if let Some(e) = end {
                    a.push(int("end", *e));
                }
                ("Shape", a)
            }
            Op::Gather { axis } => ("Gather", vec![int("axis", *axis)]),
            Op::Pad { mode } => {
                let m = match mode {
                    PadMode::Constant => "constant",
                    PadMode::Reflect => "reflect",
                    PadMode::Edge => "edge",
                };
                ("Pad", vec![string("mode", m)])
            }
            Op::Resize(r) => {
                let mode = match r.mode {
                    ResizeMode::Nearest => "nearest",
                    ResizeMode::Linear => "linear",
                };
                let coord = match r.coord {
                    CoordTransform::HalfPixel => "half_pixel",
                    CoordTransform::PytorchHalfPixel => "pytorch_half_pixel",
                    CoordTransform::AlignCorners => "align_corners",
                    CoordTransform::Asymmetric => "asymmetric",
                    CoordTransform::TfCropAndResize => "tf_crop_and_resize",
                };
                let nearest = match r.nearest_mode {
                    NearestMode::RoundPreferFloor => "round_prefer_floor",
                    NearestMode::RoundPreferCeil => "round_prefer_ceil",
                    NearestMode::Floor => "floor",
                    NearestMode::Ceil => "ceil",
                };
                (
                    "Resize",
                    vec![
                        string("mode", mode),
                        string("coordinate_transformation_mode", coord),
                        string("nearest_mode", nearest),
                        float("extrapolation_value", r.extrapolation_value),
                    ],
                )
            }
            Op::ConstantOfShape { value } => ("ConstantOfShape", vec![tensor("value", value)]),
            Op::Cast { to } => ("Cast", vec![int("to", to.onnx_code() as i64)]),
            op => (op.name(), vec![]),
        };
        self.push(&n.name, op_type, n.inputs.clone(), outputs, attrs);
        if let Some(act) = act {
            let name = format!("{}__activation", n.name);
            let out = vec![n.outputs[0].clone()];
            match act {
                Activation::Relu => self.push(&name, "Relu", vec![pre], out, vec![]),
                Activation::Sigmoid => self.push(&name, "Sigmoid", vec![pre], out, vec![]),
                Activation::Clip { min, max } => {
                    let (lo, hi) = (format!("{name}_min"), format!("{name}_max"));
                    self.extra.push((lo.clone(), Tensor::scalar(min)));
                    self.extra.push((hi.clone(), Tensor::scalar(max)));
                    self.push(&name, "Clip", vec![pre, lo, hi], out, vec![]);
                }
            }
        }
        Ok(())
    }

    /// Opset < 13 softmax normalises over the input flattened to 2-D at `axis`: Flatten, then
    /// Softmax over the last axis, then Reshape back to the input's shape.
    fn legacy_softmax(&mut self, n: &Node, ty: &str, axis: i64) -> Result<()> {
        let x = n
            .input(0)
            .ok_or_else(|| Error::node(n, "input 0 is required"))?
            .to_string();
        let (flat, soft, shape) = (
            format!("{}__flat", n.name),
            format!("{}__soft", n.name),
            format!("{}__shape", n.name),
        );
        self.push(
            &flat,
            "Flatten",
            vec![x.clone()],
            vec![flat.clone()],
            vec![int("axis", axis)],
        );
        self.push(
            &soft,
            ty,
            vec![flat],
            vec![soft.clone()],
            vec![int("axis", -1)],
        );
        self.push(&shape, "Shape", vec![x], vec![shape.clone()], vec![]);
        self.push(
            &n.name,
            "Reshape",
            vec![soft, shape],
            n.outputs.clone(),
            vec![],
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::parse_model;
    use crate::passes;

    #[test]
    fn optimized_graph_reimports_with_the_same_ops() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/unet128.onnx");
        let mut g = crate::onnx::load_model(&path).unwrap();
        passes::optimize(&mut g).unwrap();
        let bytes = export_model(&g).unwrap();
        let mut back = parse_model(&bytes, None).unwrap();
        passes::optimize(&mut back).unwrap();
        assert_eq!(back.op_histogram(), g.op_histogram());
        assert_eq!(back.outputs.len(), g.outputs.len());
    }
}
