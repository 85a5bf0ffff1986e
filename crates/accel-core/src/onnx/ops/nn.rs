//! MatMul, Gemm, LSTM, Softmax.

use super::NodeCtx;
use crate::Result;
use crate::ir::{Direction, Gemm, Lstm, Op};

pub(super) fn convert(n: &mut NodeCtx) -> Result<Op> {
    let a = &n.attrs;
    Ok(match n.proto.op_type() {
        "MatMul" => Op::MatMul { activation: None },
        "Gemm" => Op::Gemm(Gemm {
            alpha: a.float_or("alpha", 1.0),
            beta: a.float_or("beta", 1.0),
            trans_a: a.int_or("transA", 0) != 0,
            trans_b: a.int_or("transB", 0) != 0,
            activation: None,
        }),
        "LSTM" => lstm(n)?,
        "Softmax" | "LogSoftmax" => {
            // Before opset 13 the axis meant "flatten to 2-D at axis", default 1.
            let legacy = n.opset() < 13;
            let axis = a.int_or("axis", if legacy { 1 } else { -1 });
            if n.proto.op_type() == "Softmax" {
                Op::Softmax { axis, legacy }
            } else {
                Op::LogSoftmax { axis, legacy }
            }
        }
        _ => unreachable!("dispatched by op type"),
    })
}

fn lstm(n: &NodeCtx) -> Result<Op> {
    let a = &n.attrs;
    let hidden = a
        .int("hidden_size")
        .ok_or_else(|| n.err("hidden_size is required"))?;
    let hidden_size = usize::try_from(hidden)
        .ok()
        .filter(|&h| h > 0 && h.checked_mul(8).is_some())
        .ok_or_else(|| {
            n.err(format!(
                "hidden_size must be positive and sane, got {hidden}"
            ))
        })?;
    let layout = match a.int_or("layout", 0) {
        0 => 0,
        1 => 1,
        l => return Err(n.err(format!("layout must be 0 or 1, got {l}"))),
    };
    let direction = match a.string("direction")?.as_deref() {
        None | Some("forward") => Direction::Forward,
        Some("reverse") => Direction::Reverse,
        Some("bidirectional") => Direction::Bidirectional,
        Some(d) => return Err(n.err(format!("unknown direction '{d}'"))),
    };
    if let Some(acts) = a.strings("activations")? {
        let default = ["Sigmoid", "Tanh", "Tanh"];
        let ok = acts.chunks(3).all(|c| {
            c.iter()
                .zip(default)
                .all(|(x, d)| x.eq_ignore_ascii_case(d))
        });
        if !ok {
            return Err(n.unsupported(&format!(
                "LSTM activations {acts:?} (only Sigmoid, Tanh, Tanh)"
            )));
        }
    }
    if n.inputs.len() > 7 && !n.inputs[7].is_empty() {
        return Err(n.unsupported("LSTM peephole weights (input P)"));
    }
    Ok(Op::Lstm(Lstm {
        hidden_size,
        direction,
        clip: a.float("clip"),
        input_forget: a.int_or("input_forget", 0) != 0,
        layout,
    }))
}
