//! Constant folding, including the Shape -> Gather -> Concat -> Reshape chains exporters emit
//! around dynamic batch sizes: a Shape whose input shape is fully known becomes a constant.

use super::infer_shapes;
use crate::ir::{Graph, Op};
use crate::{Result, Tensor, ops};
use std::sync::Arc;

/// Folded values larger than this stay computed at run time (they would bloat the graph).
const MAX_FOLDED_ELEMENTS: usize = 1 << 24;

/// Returns how many nodes were folded.
pub fn fold_constants(graph: &mut Graph) -> Result<usize> {
    let mut total = 0;
    loop {
        infer_shapes(graph)?;
        let folded = fold_once(graph)?;
        if folded == 0 {
            return Ok(total);
        }
        total += folded;
    }
}

fn fold_once(graph: &mut Graph) -> Result<usize> {
    let mut folded = 0;
    let mut kept = Vec::with_capacity(graph.nodes.len());
    for node in std::mem::take(&mut graph.nodes) {
        if let Some(values) = try_fold(graph, &node)? {
            for (name, t) in node.outputs.iter().zip(values) {
                if !name.is_empty() {
                    graph.constants.insert(name.clone(), Arc::new(t));
                }
            }
            folded += 1;
        } else {
            kept.push(node);
        }
    }
    graph.nodes = kept;
    Ok(folded)
}

fn try_fold(graph: &Graph, node: &crate::Node) -> Result<Option<Vec<Tensor>>> {
    if let Op::Shape { .. } = node.op {
        // Only the input's shape matters, not its value.
        let Some(shape) = node
            .input(0)
            .and_then(|i| graph.value_type(i))
            .and_then(|v| v.concrete_shape())
        else {
            return Ok(None);
        };
        let Op::Shape { start, end } = node.op else {
            unreachable!("matched above")
        };
        // The shape alone: never allocate the (possibly huge) input.
        return ops::shape_of(&shape, start, end).map(|t| Some(vec![t]));
    }
    if !ops::can_eval(&node.op) {
        return Ok(None);
    }
    let inputs: Option<Vec<Option<&Tensor>>> = node
        .inputs
        .iter()
        .map(|i| {
            if i.is_empty() {
                Some(None)
            } else {
                graph.constant(i).map(Some)
            }
        })
        .collect();
    let Some(inputs) = inputs else {
        return Ok(None);
    };
    // Skip outputs too large to keep as constants (known from shape inference).
    let too_big = node.outputs.iter().any(|o| {
        graph
            .value_info
            .get(o)
            .and_then(|v| v.concrete_shape())
            .is_some_and(|s| {
                s.iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .is_none_or(|n| n > MAX_FOLDED_ELEMENTS)
            })
    });
    if too_big {
        return Ok(None);
    }
    ops::eval(node, &inputs).map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{graph, node};
    use super::*;
    use crate::ir::Op;

    #[test]
    fn folds_shape_chain_into_reshape_target() {
        // y = Reshape(x, Concat(Gather(Shape(x), 0), [-1]))  with x: [2, 3, 4]
        let mut g = graph(
            &[("x", &[2, 3, 4])],
            &["y"],
            vec![
                node(
                    "shape",
                    Op::Shape {
                        start: 0,
                        end: None,
                    },
                    &["x"],
                    &["s"],
                ),
                node("gather", Op::Gather { axis: 0 }, &["s", "zero"], &["b"]),
                node("unsq", Op::Unsqueeze, &["b", "axes0"], &["b1"]),
                node(
                    "concat",
                    Op::Concat { axis: 0 },
                    &["b1", "minus1"],
                    &["target"],
                ),
                node(
                    "reshape",
                    Op::Reshape { allowzero: false },
                    &["x", "target"],
                    &["y"],
                ),
            ],
            vec![
                ("zero", Tensor::scalar(0i64)),
                ("axes0", Tensor::from_vec(vec![1], vec![0i64]).unwrap()),
                ("minus1", Tensor::from_vec(vec![1], vec![-1i64]).unwrap()),
            ],
        );
        let n = fold_constants(&mut g).unwrap();
        assert_eq!(n, 4);
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(
            g.constant("target").unwrap().as_slice::<i64>().unwrap(),
            &[2, -1]
        );
        let out = g.outputs[0].concrete_shape().unwrap();
        assert_eq!(out, vec![2, 12]);
    }

    #[test]
    fn symbolic_batch_keeps_shape_node() {
        let mut g = graph(
            &[("x", &[2, 3])],
            &["s"],
            vec![node(
                "shape",
                Op::Shape {
                    start: 0,
                    end: None,
                },
                &["x"],
                &["s"],
            )],
            vec![],
        );
        g.inputs[0].shape = Some(vec![crate::Dim::Sym("N".into()), crate::Dim::Known(3)]);
        assert_eq!(fold_constants(&mut g).unwrap(), 0);
        assert_eq!(g.nodes.len(), 1);
    }
}
