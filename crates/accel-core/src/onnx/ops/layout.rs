//! Shape, layout and data-movement operators.

use super::{NodeCtx, i64_tensor};
use crate::ir::{CoordTransform, NearestMode, Op, PadMode, Resize, ResizeMode};
use crate::onnx::tensor::tensor_from_proto;
use crate::{DType, Error, Result, Tensor};

pub(super) fn convert(n: &mut NodeCtx) -> Result<Op> {
    let op_type = n.proto.op_type().to_string();
    let opset = n.opset();
    Ok(match op_type.as_str() {
        "Concat" => Op::Concat {
            axis: n
                .attrs
                .int("axis")
                .ok_or_else(|| n.err("axis is required"))?,
        },
        "Split" => {
            if n.proto.output.is_empty() {
                return Err(n.err("Split needs at least one output"));
            }
            if opset < 13
                && let Some(split) = n.attrs.ints("split")
            {
                n.attr_as_input(1, i64_tensor(split));
            }
            Op::Split {
                axis: n.attrs.int_or("axis", 0),
                num_outputs: n.proto.output.len(),
            }
        }
        "Reshape" => {
            if opset < 5 {
                return Err(n.unsupported("Reshape with a shape attribute (opset < 5)"));
            }
            Op::Reshape {
                allowzero: n.attrs.int_or("allowzero", 0) != 0,
            }
        }
        "Transpose" => Op::Transpose {
            perm: n.attrs.usizes("perm")?,
        },
        "Squeeze" | "Unsqueeze" => {
            if opset < 13
                && let Some(axes) = n.attrs.ints("axes")
            {
                n.attr_as_input(1, i64_tensor(axes));
            }
            if op_type == "Squeeze" {
                Op::Squeeze
            } else {
                Op::Unsqueeze
            }
        }
        "Flatten" => Op::Flatten {
            axis: n.attrs.int_or("axis", 1),
        },
        "Shape" => Op::Shape {
            start: n.attrs.int_or("start", 0),
            end: n.attrs.int("end"),
        },
        "Gather" => Op::Gather {
            axis: n.attrs.int_or("axis", 0),
        },
        "Slice" => {
            if opset < 10 {
                let starts = n
                    .attrs
                    .ints("starts")
                    .ok_or_else(|| n.err("starts is required"))?;
                let ends = n
                    .attrs
                    .ints("ends")
                    .ok_or_else(|| n.err("ends is required"))?;
                n.attr_as_input(1, i64_tensor(starts));
                n.attr_as_input(2, i64_tensor(ends));
                if let Some(axes) = n.attrs.ints("axes") {
                    n.attr_as_input(3, i64_tensor(axes));
                }
            }
            Op::Slice
        }
        "Expand" => Op::Expand,
        "Tile" => Op::Tile,
        "Pad" => {
            let mode = match n.attrs.string("mode")?.as_deref() {
                None | Some("constant") => PadMode::Constant,
                Some("reflect") => PadMode::Reflect,
                Some("edge") => PadMode::Edge,
                Some(m) => return Err(n.unsupported(&format!("pad mode '{m}'"))),
            };
            if opset < 11 {
                let pads = n
                    .attrs
                    .ints("pads")
                    .ok_or_else(|| n.err("pads is required"))?;
                n.attr_as_input(1, i64_tensor(pads));
                n.attr_as_input(2, Tensor::scalar(n.attrs.float_or("value", 0.0)));
            }
            Op::Pad { mode }
        }
        "Resize" | "Upsample" => resize(n, &op_type)?,
        "Range" => Op::Range,
        "ConstantOfShape" => {
            let value = match n.attrs.tensor("value") {
                Some(t) => tensor_from_proto(t, None)?,
                None => Tensor::from_vec(vec![1], vec![0.0f32])?,
            };
            if value.len() != 1 {
                return Err(n.err("value must hold exactly one element"));
            }
            Op::ConstantOfShape { value }
        }
        "Cast" => {
            let to = n.attrs.int("to").ok_or_else(|| n.err("'to' is required"))?;
            let to = i32::try_from(to)
                .map_err(|_| n.err(format!("'to' = {to} is not a data type code")))?;
            let to = DType::from_onnx_code(to)
                .map_err(|ty| Error::UnsupportedDType(format!("{ty} (Cast node '{}')", n.name)))?;
            Op::Cast { to }
        }
        "Identity" => Op::Identity,
        "Dropout" => Op::Dropout,
        _ => unreachable!("dispatched by op type"),
    })
}

fn resize(n: &mut NodeCtx, op_type: &str) -> Result<Op> {
    let a = &n.attrs;
    let mode = match a.string("mode")?.as_deref() {
        None | Some("nearest") => ResizeMode::Nearest,
        Some("linear") | Some("bilinear") => ResizeMode::Linear,
        Some(m) => return Err(n.unsupported(&format!("resize mode '{m}'"))),
    };
    let coord = match a.string("coordinate_transformation_mode")?.as_deref() {
        None if op_type == "Upsample" || n.opset() < 11 => CoordTransform::Asymmetric,
        None | Some("half_pixel") => CoordTransform::HalfPixel,
        Some("pytorch_half_pixel") => CoordTransform::PytorchHalfPixel,
        Some("align_corners") => CoordTransform::AlignCorners,
        Some("asymmetric") => CoordTransform::Asymmetric,
        Some("tf_crop_and_resize") => CoordTransform::TfCropAndResize,
        Some(m) => return Err(n.unsupported(&format!("coordinate_transformation_mode '{m}'"))),
    };
    let nearest_mode = match a.string("nearest_mode")?.as_deref() {
        None if op_type == "Upsample" || n.opset() < 11 => NearestMode::Floor,
        None | Some("round_prefer_floor") => NearestMode::RoundPreferFloor,
        Some("round_prefer_ceil") => NearestMode::RoundPreferCeil,
        Some("floor") => NearestMode::Floor,
        Some("ceil") => NearestMode::Ceil,
        Some(m) => return Err(n.unsupported(&format!("nearest_mode '{m}'"))),
    };
    if a.int_or("antialias", 0) != 0 {
        return Err(n.unsupported("antialias"));
    }
    if a.has("axes") {
        return Err(n.unsupported("Resize axes attribute"));
    }
    if a.string("keep_aspect_ratio_policy")?
        .is_some_and(|p| p != "stretch")
    {
        return Err(n.unsupported("keep_aspect_ratio_policy other than stretch"));
    }
    if coord == CoordTransform::TfCropAndResize {
        return Err(n.unsupported("tf_crop_and_resize"));
    }
    let extrapolation_value = a.float_or("extrapolation_value", 0.0);
    if n.inputs.first().is_none_or(|x| x.is_empty()) {
        return Err(n.err("input X is required"));
    }
    // Normalise to Resize-11+ inputs: X, roi, scales, sizes.
    if op_type == "Upsample" {
        if let Some(scales) = a.floats("scales") {
            let len = scales.len();
            n.attr_as_input(2, Tensor::from_vec(vec![len], scales)?);
        } else if n.inputs.len() == 2 {
            let scales = n.inputs[1].clone();
            n.inputs = vec![n.inputs[0].clone(), String::new(), scales];
        }
    } else if n.opset() == 10 {
        let scales = n.inputs.get(1).cloned().unwrap_or_default();
        n.inputs = vec![n.inputs[0].clone(), String::new(), scales];
    }
    Ok(Op::Resize(Resize {
        mode,
        coord,
        nearest_mode,
        extrapolation_value,
    }))
}
