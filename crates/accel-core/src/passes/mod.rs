//! Graph passes. They run once in core, before any backend sees the graph, and keep the
//! graph's outputs bit-for-bit or within 1e-6 (BatchNorm folding reassociates floats).

mod batchnorm;
mod cleanup;
mod fold;
mod fuse;
mod infer;
mod pad;
mod transpose;

pub use batchnorm::fold_batchnorm;
pub use cleanup::{remove_dead_nodes, remove_identities};
pub use fold::fold_constants;
pub use fuse::fuse_activations;
pub use infer::{bind_input_shapes, check_inputs, infer_shapes, specialize};
pub use pad::fold_pads_into_convs;
pub use transpose::cancel_transposes;

use crate::{Graph, Result};

/// What [`optimize`] did, for reports and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub folded_constants: usize,
    pub removed_identities: usize,
    pub cancelled_transposes: usize,
    pub folded_batchnorms: usize,
    pub folded_pads: usize,
    pub fused_activations: usize,
    pub removed_dead: usize,
}

/// Runs every pass in order until the graph stops changing.
pub fn optimize(graph: &mut Graph) -> Result<PassReport> {
    let mut report = PassReport::default();
    infer_shapes(graph)?;
    loop {
        let before = graph.nodes.len();
        report.removed_identities += remove_identities(graph);
        report.folded_constants += fold_constants(graph)?;
        report.cancelled_transposes += cancel_transposes(graph);
        report.folded_batchnorms += fold_batchnorm(graph)?;
        report.folded_pads += fold_pads_into_convs(graph);
        report.fused_activations += fuse_activations(graph);
        report.removed_dead += remove_dead_nodes(graph);
        if graph.nodes.len() == before {
            break;
        }
    }
    infer_shapes(graph)?;
    Ok(report)
}

#[cfg(test)]
pub(crate) mod test_util {
    use crate::ir::{Dim, Graph, Node, Op, ValueInfo};
    use crate::{DType, Tensor};
    use std::sync::Arc;

    pub fn graph(
        inputs: &[(&str, &[usize])],
        outputs: &[&str],
        nodes: Vec<Node>,
        consts: Vec<(&str, Tensor)>,
    ) -> Graph {
        let mut g = Graph {
            opset: 17,
            inputs: inputs
                .iter()
                .map(|(n, s)| {
                    ValueInfo::new(*n, DType::F32, s.iter().map(|&d| Dim::Known(d)).collect())
                })
                .collect(),
            outputs: outputs
                .iter()
                .map(|n| ValueInfo {
                    name: n.to_string(),
                    dtype: DType::F32,
                    shape: None,
                })
                .collect(),
            nodes,
            ..Default::default()
        };
        for (n, t) in consts {
            g.constants.insert(n.to_string(), Arc::new(t));
        }
        g
    }

    pub fn node(name: &str, op: Op, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        }
    }
}
