//! Folds inference BatchNormalization, and the per-channel Mul/Add that tf2onnx emits for a
//! BatchNorm after ConvTranspose, into the weights and bias of the producing Conv or
//! ConvTranspose.

use crate::ir::{BinaryOp, Graph, Op};
use crate::{Result, Tensor};
use std::sync::Arc;

/// Per-output-channel affine map y = x * scale + shift.
struct Affine {
    scale: Vec<f32>,
    shift: Vec<f32>,
}

/// Returns how many BatchNorm/Mul/Add nodes were folded.
pub fn fold_batchnorm(graph: &mut Graph) -> Result<usize> {
    let mut folded = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        if let Some((conv_idx, affine)) = foldable(graph, i)? {
            apply(graph, conv_idx, &affine)?;
            let dst = graph.nodes[i].outputs[0].clone();
            // The conv now writes the folded node's output directly.
            graph.nodes[conv_idx].outputs[0] = dst;
            graph.nodes.remove(i);
            folded += 1;
        } else {
            i += 1;
        }
    }
    Ok(folded)
}

/// Output channels of a conv-like node and its weight/bias constants.
fn conv_channels(graph: &Graph, idx: usize) -> Option<usize> {
    let n = &graph.nodes[idx];
    let w = graph.constant(n.input(1)?)?;
    if n.op.fused_activation().is_some() || w.dtype() != crate::DType::F32 {
        return None;
    }
    let ws = w.shape();
    // Odd weights are left for the kernels to reject with a proper message.
    if ws.len() < 3 || w.is_empty() {
        return None;
    }
    let channels = match &n.op {
        Op::Conv(_) => ws[0],
        Op::ConvTranspose(c) if c.group > 0 && ws[0] % c.group == 0 && ws[0] >= c.group => {
            ws[1].checked_mul(c.group)?
        }
        _ => return None,
    };
    if let Some(b) = n.input(2)
        && graph.constant(b)?.len() != channels
    {
        return None;
    }
    Some(channels)
}

fn foldable(graph: &Graph, i: usize) -> Result<Option<(usize, Affine)>> {
    let node = &graph.nodes[i];
    let Some(src) = node.input(0) else {
        return Ok(None);
    };
    if node.outputs.first().is_none_or(|o| o.is_empty()) {
        return Ok(None);
    }
    // Mul/Add may have the conv output on either side.
    let (src, other) = match &node.op {
        Op::BatchNormalization { .. } => (src, None),
        Op::Binary(BinaryOp::Mul | BinaryOp::Add | BinaryOp::Sub) => {
            let a = node.inputs[0].as_str();
            let b = node.inputs.get(1).map(String::as_str).unwrap_or("");
            if graph.is_constant(b) {
                (a, Some(b))
            } else if graph.is_constant(a) && !matches!(node.op, Op::Binary(BinaryOp::Sub)) {
                (b, Some(a))
            } else {
                return Ok(None);
            }
        }
        _ => return Ok(None),
    };
    let Some(conv_idx) = graph.nodes[..i]
        .iter()
        .position(|n| n.outputs.first().map(String::as_str) == Some(src))
    else {
        return Ok(None);
    };
    if graph.use_counts().get(src).copied().unwrap_or(0) != 1 || graph.is_graph_output(src) {
        return Ok(None);
    }
    let Some(channels) = conv_channels(graph, conv_idx) else {
        return Ok(None);
    };
    let affine = match (&node.op, other) {
        (Op::BatchNormalization { epsilon }, _) => {
            let params: Option<Vec<&Tensor>> = (1..5)
                .map(|k| node.input(k).and_then(|n| graph.constant(n)))
                .collect();
            let Some(p) = params else { return Ok(None) };
            let v: Vec<Vec<f32>> = p.iter().map(|t| t.to_f32_vec()).collect::<Result<_>>()?;
            if v.iter().any(|x| x.len() != channels) {
                return Ok(None);
            }
            let scale: Vec<f32> = (0..channels)
                .map(|c| v[0][c] / (v[3][c] + epsilon).sqrt())
                .collect();
            let shift = (0..channels)
                .map(|c| v[1][c] - v[2][c] * scale[c])
                .collect();
            Affine { scale, shift }
        }
        (Op::Binary(op), Some(k)) => {
            let t = graph.constant(k).expect("checked constant");
            let Some(per_channel) = channel_vector(
                t,
                channels,
                graph.value_type(src).and_then(|v| v.shape).map(|s| s.len()),
            ) else {
                return Ok(None);
            };
            match op {
                BinaryOp::Mul => Affine {
                    scale: per_channel,
                    shift: vec![0.0; channels],
                },
                BinaryOp::Add => Affine {
                    scale: vec![1.0; channels],
                    shift: per_channel,
                },
                _ => Affine {
                    scale: vec![1.0; channels],
                    shift: per_channel.iter().map(|x| -x).collect(),
                },
            }
        }
        _ => return Ok(None),
    };
    Ok(Some((conv_idx, affine)))
}

/// A constant broadcast only along the channel axis (scalar, [C,1,1], [1,C,1,1], ...) as one
/// value per channel.
fn channel_vector(t: &Tensor, channels: usize, out_rank: Option<usize>) -> Option<Vec<f32>> {
    let v = t.to_f32_vec().ok()?;
    if t.dtype() != crate::DType::F32 {
        return None;
    }
    if v.len() == 1 {
        return Some(vec![v[0]; channels]);
    }
    let rank = out_rank?;
    let s = t.shape();
    // The non-1 axis must be the channel axis (1) once right-aligned against the output rank.
    let non_one: Vec<usize> = s
        .iter()
        .enumerate()
        .filter(|(_, d)| **d != 1)
        .map(|(i, _)| i + rank - s.len())
        .collect();
    (s.len() <= rank && non_one == [1] && v.len() == channels).then_some(v)
}

fn apply(graph: &mut Graph, idx: usize, a: &Affine) -> Result<()> {
    let node = graph.nodes[idx].clone();
    let w_name = node.inputs[1].clone();
    let w = graph.constant(&w_name).expect("checked constant").clone();
    let shape = w.shape().to_vec();
    let mut wv = w.into_vec::<f32>()?;
    let oc = a.scale.len();
    match &node.op {
        Op::Conv(_) => {
            let per = wv.len() / oc;
            for (c, chunk) in wv.chunks_mut(per).enumerate() {
                chunk.iter_mut().for_each(|x| *x *= a.scale[c]);
            }
        }
        Op::ConvTranspose(ct) => {
            // Weight [Cin, Cout/group, k...]; output channel = group * (Cout/group) + j.
            let cout_g = shape[1];
            let cin_g = shape[0] / ct.group;
            let k: usize = shape[2..].iter().product();
            for ci in 0..shape[0] {
                let g = ci / cin_g;
                for j in 0..cout_g {
                    let s = a.scale[g * cout_g + j];
                    let at = (ci * cout_g + j) * k;
                    wv[at..at + k].iter_mut().for_each(|x| *x *= s);
                }
            }
        }
        _ => unreachable!("only convs are folded into"),
    }
    let bias: Vec<f32> = match node.input(2) {
        Some(b) => graph.constant(b).expect("checked constant").to_f32_vec()?,
        None => vec![0.0; oc],
    };
    let new_bias: Vec<f32> = (0..oc).map(|c| bias[c] * a.scale[c] + a.shift[c]).collect();
    // Fresh names: the old constants may be shared with other nodes.
    let new_w = graph.fresh_name(&format!("{w_name}_folded"));
    let new_b = graph.fresh_name(&format!("{}_bias_folded", node.name));
    graph
        .constants
        .insert(new_w.clone(), Arc::new(Tensor::from_vec(shape, wv)?));
    graph.constants.insert(
        new_b.clone(),
        Arc::new(Tensor::from_vec(vec![oc], new_bias)?),
    );
    let n = &mut graph.nodes[idx];
    n.inputs[1] = new_w;
    if n.inputs.len() < 3 {
        n.inputs.resize(3, String::new());
    }
    n.inputs[2] = new_b;
    Ok(())
}
