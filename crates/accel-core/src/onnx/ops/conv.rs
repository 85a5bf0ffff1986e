//! Conv, ConvTranspose, pooling, BatchNormalization.

use super::NodeCtx;
use crate::Result;
use crate::ir::{AutoPad, Conv, ConvTranspose, Op, Pool, Window};

pub(super) fn convert(n: &mut NodeCtx) -> Result<Op> {
    let a = &n.attrs;
    Ok(match n.proto.op_type() {
        "Conv" => Op::Conv(Conv {
            window: window(n)?,
            group: group(n)?,
            activation: None,
        }),
        "ConvTranspose" => Op::ConvTranspose(ConvTranspose {
            window: window(n)?,
            group: group(n)?,
            output_padding: a.usizes("output_padding")?.unwrap_or_default(),
            output_shape: a.usizes("output_shape")?,
            activation: None,
        }),
        "MaxPool" | "AveragePool" => {
            if n.proto.output.len() > 1 && !n.proto.output[1].is_empty() {
                return Err(n.unsupported("MaxPool's Indices output"));
            }
            if a.int_or("storage_order", 0) != 0 {
                return Err(n.unsupported("storage_order=1"));
            }
            let w = window(n)?;
            if w.kernel_shape.is_empty() {
                return Err(n.err("kernel_shape is required"));
            }
            let pool = Pool {
                window: w,
                ceil_mode: a.int_or("ceil_mode", 0) != 0,
                count_include_pad: a.int_or("count_include_pad", 0) != 0,
            };
            if n.proto.op_type() == "MaxPool" {
                Op::MaxPool(pool)
            } else {
                Op::AveragePool(pool)
            }
        }
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "GlobalMaxPool" => Op::GlobalMaxPool,
        "BatchNormalization" => {
            if a.int_or("training_mode", 0) != 0
                || n.proto.output.iter().skip(1).any(|o| !o.is_empty())
            {
                return Err(n.unsupported("BatchNormalization in training mode"));
            }
            Op::BatchNormalization {
                epsilon: a.float_or("epsilon", 1e-5),
            }
        }
        _ => unreachable!("dispatched by op type"),
    })
}

fn group(n: &NodeCtx) -> Result<usize> {
    let g = n.attrs.int_or("group", 1);
    usize::try_from(g)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| n.err(format!("group must be positive, got {g}")))
}

fn window(n: &NodeCtx) -> Result<Window> {
    let a = &n.attrs;
    let auto_pad = match a.string("auto_pad")?.as_deref() {
        None | Some("NOTSET") | Some("") => AutoPad::NotSet,
        Some("SAME_UPPER") => AutoPad::SameUpper,
        Some("SAME_LOWER") => AutoPad::SameLower,
        Some("VALID") => AutoPad::Valid,
        Some(other) => return Err(n.err(format!("unknown auto_pad '{other}'"))),
    };
    let w = Window {
        kernel_shape: a.usizes("kernel_shape")?.unwrap_or_default(),
        strides: a.usizes("strides")?.unwrap_or_default(),
        dilations: a.usizes("dilations")?.unwrap_or_default(),
        pads: a.usizes("pads")?.unwrap_or_default(),
        auto_pad,
    };
    if w.strides.contains(&0) || w.dilations.contains(&0) {
        return Err(n.err("strides and dilations must be positive"));
    }
    Ok(w)
}
