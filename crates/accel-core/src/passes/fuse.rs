//! Fuses Relu, Clip (constant bounds, e.g. ReLU6) and Sigmoid into the epilogue of the
//! producing Conv, ConvTranspose, Gemm or MatMul.

use crate::ir::{Activation, Graph, Op, UnaryOp};

/// Returns how many activations were fused.
pub fn fuse_activations(graph: &mut Graph) -> usize {
    let mut fused = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        if let Some((p, act)) = fusable(graph, i) {
            let dst = graph.nodes[i].outputs[0].clone();
            let producer = &mut graph.nodes[p];
            match &mut producer.op {
                Op::Conv(c) => c.activation = Some(act),
                Op::ConvTranspose(c) => c.activation = Some(act),
                Op::Gemm(g) => g.activation = Some(act),
                Op::MatMul { activation } => *activation = Some(act),
                _ => unreachable!("fusable checked the producer"),
            }
            producer.outputs[0] = dst;
            graph.nodes.remove(i);
            fused += 1;
        } else {
            i += 1;
        }
    }
    fused
}

fn fusable(graph: &Graph, i: usize) -> Option<(usize, Activation)> {
    let node = &graph.nodes[i];
    let act = match &node.op {
        Op::Unary(UnaryOp::Relu) => Activation::Relu,
        Op::Unary(UnaryOp::Sigmoid) => Activation::Sigmoid,
        Op::Clip => {
            let bound = |k: usize, default: f32| -> Option<f32> {
                match node.input(k) {
                    None => Some(default),
                    Some(name) => graph.constant(name)?.to_f32_vec().ok()?.first().copied(),
                }
            };
            Activation::Clip {
                min: bound(1, f32::NEG_INFINITY)?,
                max: bound(2, f32::INFINITY)?,
            }
        }
        _ => return None,
    };
    let src = node.input(0)?;
    node.outputs.first().filter(|o| !o.is_empty())?;
    let p = graph.nodes[..i]
        .iter()
        .position(|n| n.outputs.first().map(String::as_str) == Some(src))?;
    let producer = &graph.nodes[p];
    let eligible = matches!(
        producer.op,
        Op::Conv(_) | Op::ConvTranspose(_) | Op::Gemm(_) | Op::MatMul { .. }
    ) && producer.op.fused_activation().is_none()
        && graph
            .value_type(src)
            .is_some_and(|v| v.dtype == crate::DType::F32);
    let single_use = graph.use_counts().get(src).copied() == Some(1) && !graph.is_graph_output(src);
    (eligible && single_use).then_some((p, act))
}

#[cfg(test)]
mod tests {
    use super::super::infer_shapes;
    use super::super::test_util::{graph, node};
    use super::*;
    use crate::Tensor;
    use crate::ir::Gemm;

    #[test]
    fn fuses_relu6_into_gemm_and_keeps_output_name() {
        let mut g = graph(
            &[("x", &[1, 2])],
            &["y"],
            vec![
                node(
                    "gemm",
                    Op::Gemm(Gemm {
                        alpha: 1.0,
                        beta: 1.0,
                        trans_a: false,
                        trans_b: false,
                        activation: None,
                    }),
                    &["x", "w"],
                    &["h"],
                ),
                node("clip", Op::Clip, &["h", "lo", "hi"], &["y"]),
            ],
            vec![
                (
                    "w",
                    Tensor::from_vec(vec![2, 2], vec![1.0f32, 0.0, 0.0, 1.0]).unwrap(),
                ),
                ("lo", Tensor::scalar(0.0f32)),
                ("hi", Tensor::scalar(6.0f32)),
            ],
        );
        infer_shapes(&mut g).unwrap();
        assert_eq!(fuse_activations(&mut g), 1);
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.nodes[0].outputs[0], "y");
        assert_eq!(
            g.nodes[0].op.fused_activation(),
            Some(Activation::Clip { min: 0.0, max: 6.0 })
        );
    }

    #[test]
    fn shared_output_is_not_fused() {
        let mut g = graph(
            &[("x", &[1, 2])],
            &["y", "h"],
            vec![
                node("mm", Op::MatMul { activation: None }, &["x", "w"], &["h"]),
                node("relu", Op::Unary(UnaryOp::Relu), &["h"], &["y"]),
            ],
            vec![("w", Tensor::from_vec(vec![2, 2], vec![1.0f32; 4]).unwrap())],
        );
        infer_shapes(&mut g).unwrap();
        assert_eq!(fuse_activations(&mut g), 0);
    }
}
