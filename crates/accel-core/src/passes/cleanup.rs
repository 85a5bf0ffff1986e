//! Identity/Dropout removal and dead-node elimination.

use crate::ir::{Graph, Op};
use std::collections::HashSet;

/// Removes Identity and inference-mode Dropout nodes by rewiring their readers. Returns how
/// many were removed.
pub fn remove_identities(graph: &mut Graph) -> usize {
    let mut removed = 0;
    let mut i = 0;
    while i < graph.nodes.len() {
        let n = &graph.nodes[i];
        let passthrough = match n.op {
            Op::Identity => true,
            // Dropout's mask output must be unused for it to vanish, and training_mode (input
            // 2), when given, a constant false.
            Op::Dropout => {
                n.outputs
                    .iter()
                    .skip(1)
                    .all(|o| o.is_empty() || !graph.use_counts().contains_key(o.as_str()))
                    && n.input(2).is_none_or(|t| {
                        graph
                            .constant(t)
                            .and_then(|c| c.to_i64_vec().ok())
                            .is_some_and(|v| v.iter().all(|&b| b == 0))
                    })
            }
            _ => false,
        };
        let (Some(src), Some(dst)) = (n.input(0).map(str::to_string), n.outputs.first().cloned())
        else {
            i += 1;
            continue;
        };
        // An output that is also a graph input or constant has no producer to rename: keep it.
        let src_has_producer = graph.nodes.iter().any(|m| m.outputs.contains(&src));
        if passthrough
            && (!graph.is_graph_output(&dst) || (src_has_producer && !graph.is_graph_output(&src)))
        {
            graph.nodes.remove(i);
            graph.replace_uses(&dst, &src);
            removed += 1;
        } else {
            i += 1;
        }
    }
    removed
}

/// Removes nodes whose outputs nobody reads, and unread constants. Returns the node count.
pub fn remove_dead_nodes(graph: &mut Graph) -> usize {
    let mut live: HashSet<String> = graph.outputs.iter().map(|o| o.name.clone()).collect();
    let mut keep = vec![false; graph.nodes.len()];
    for (i, n) in graph.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|o| live.contains(o)) {
            keep[i] = true;
            live.extend(n.inputs.iter().filter(|s| !s.is_empty()).cloned());
        }
    }
    let before = graph.nodes.len();
    let mut k = keep.into_iter();
    graph.nodes.retain(|_| k.next().unwrap_or(true));
    graph.constants.retain(|name, _| live.contains(name));
    before - graph.nodes.len()
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{graph, node};
    use super::*;
    use crate::ir::UnaryOp;

    #[test]
    fn identity_and_dropout_vanish_and_outputs_keep_names() {
        let mut g = graph(
            &[("x", &[2])],
            &["y"],
            vec![
                node("relu", Op::Unary(UnaryOp::Relu), &["x"], &["a"]),
                node("id", Op::Identity, &["a"], &["b"]),
                node("drop", Op::Dropout, &["b"], &["y"]),
                node("dead", Op::Unary(UnaryOp::Neg), &["x"], &["unused"]),
            ],
            vec![],
        );
        assert_eq!(remove_identities(&mut g), 2);
        assert_eq!(remove_dead_nodes(&mut g), 1);
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.nodes[0].outputs, vec!["y".to_string()]);
        g.validate().unwrap();
    }

    #[test]
    fn identity_from_input_to_output_stays() {
        let mut g = graph(
            &[("x", &[2])],
            &["y"],
            vec![node("id", Op::Identity, &["x"], &["y"])],
            vec![],
        );
        assert_eq!(remove_identities(&mut g), 0);
        g.validate().unwrap();
    }
}
