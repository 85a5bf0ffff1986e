//! Transpose cancelling: composes chains of Transposes (tf2onnx's NHWC<->NCHW pairs) and
//! removes the ones that end up as the identity permutation.

use crate::ir::{Graph, Op};

fn perm_of(op: &Op, rank: Option<usize>) -> Option<Vec<usize>> {
    match op {
        Op::Transpose { perm: Some(p) } => Some(p.clone()),
        Op::Transpose { perm: None } => rank.map(|r| (0..r).rev().collect()),
        _ => None,
    }
}

/// Returns how many Transposes were merged or removed.
pub fn cancel_transposes(graph: &mut Graph) -> usize {
    let mut changed = 0;
    // Merge Transpose(Transpose(x)) into one Transpose of x.
    for i in 0..graph.nodes.len() {
        let Some(outer) = perm_of(&graph.nodes[i].op, None) else {
            continue;
        };
        let Some(src) = graph.nodes[i].input(0).map(str::to_string) else {
            continue;
        };
        let Some(j) = graph.nodes[..i]
            .iter()
            .position(|n| n.outputs.first() == Some(&src))
        else {
            continue;
        };
        let Some(inner) = perm_of(&graph.nodes[j].op, None) else {
            continue;
        };
        // Only true permutations compose; anything else is left for the op to reject.
        let is_perm = |p: &[usize]| {
            let mut seen = vec![false; p.len()];
            p.iter()
                .all(|&k| k < p.len() && !std::mem::replace(&mut seen[k], true))
        };
        if inner.len() != outer.len() || !is_perm(&inner) || !is_perm(&outer) {
            continue;
        }
        // out[k] = mid[outer[k]] = x[inner[outer[k]]]
        let composed: Vec<usize> = outer.iter().map(|&k| inner[k]).collect();
        let x = graph.nodes[j].inputs[0].clone();
        graph.nodes[i].op = Op::Transpose {
            perm: Some(composed),
        };
        graph.nodes[i].inputs[0] = x;
        changed += 1;
    }
    // Drop identity permutations.
    let mut k = 0;
    while k < graph.nodes.len() {
        let n = &graph.nodes[k];
        let identity =
            perm_of(&n.op, None).is_some_and(|p| p.iter().enumerate().all(|(a, &b)| a == b));
        let (Some(src), Some(dst)) = (n.inputs.first().cloned(), n.outputs.first().cloned()) else {
            k += 1;
            continue;
        };
        let src_has_producer = graph.nodes.iter().any(|m| m.outputs.contains(&src));
        if identity
            && (!graph.is_graph_output(&dst) || (src_has_producer && !graph.is_graph_output(&src)))
        {
            graph.nodes.remove(k);
            graph.replace_uses(&dst, &src);
            changed += 1;
        } else {
            k += 1;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{graph, node};
    use super::super::{remove_dead_nodes, specialize};
    use super::*;
    use crate::ir::UnaryOp;
    use crate::{Tensor, ops};

    #[test]
    fn nhwc_nchw_pair_cancels_and_values_match() {
        let mut g = graph(
            &[("x", &[1, 4, 5, 3])],
            &["y"],
            vec![
                node(
                    "to_nchw",
                    Op::Transpose {
                        perm: Some(vec![0, 3, 1, 2]),
                    },
                    &["x"],
                    &["a"],
                ),
                node("relu", Op::Unary(UnaryOp::Relu), &["a"], &["b"]),
                node(
                    "to_nhwc",
                    Op::Transpose {
                        perm: Some(vec![0, 2, 3, 1]),
                    },
                    &["b"],
                    &["c"],
                ),
                node(
                    "back",
                    Op::Transpose {
                        perm: Some(vec![0, 3, 1, 2]),
                    },
                    &["c"],
                    &["y"],
                ),
            ],
            vec![],
        );
        let x = Tensor::from_vec(
            vec![1, 4, 5, 3],
            (0..60).map(|i| i as f32 - 30.0).collect::<Vec<_>>(),
        )
        .unwrap();
        let before = run(&g, &x);
        assert!(cancel_transposes(&mut g) >= 2);
        remove_dead_nodes(&mut g);
        let kinds: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
        assert_eq!(kinds, vec!["Transpose", "Relu"]);
        assert_eq!(run(&g, &x), before);
    }

    /// Evaluates a graph of light ops with core's reference ops.
    fn run(g: &Graph, x: &Tensor) -> Tensor {
        let g = specialize(g, &[("x", x.shape())]).unwrap();
        let mut env: std::collections::HashMap<String, Tensor> =
            [("x".to_string(), x.clone())].into();
        for n in &g.nodes {
            let ins: Vec<Option<&Tensor>> = n.inputs.iter().map(|i| env.get(i)).collect();
            let outs = ops::eval(n, &ins).unwrap();
            for (o, t) in n.outputs.iter().zip(outs) {
                env.insert(o.clone(), t);
            }
        }
        env.remove("y").unwrap()
    }
}
