//! Which nodes keep f32 storage in an executable compiled for f16.
//!
//! f16 storage rounds every stored value to 11 significant bits, and an error made early is
//! amplified by every layer after it, so the leading layers matter most. Simulated with ONNX
//! Runtime (f16 rounding of chosen weights and outputs) on the trained U-Net, its sigmoid
//! mask's max abs difference from f32 is: everything in f16 2.4e-2; the first 2 of its 56
//! weighted layers in f32 1.0e-2, the first 8 8.6e-3, 14 5.6e-3, 16 3.8e-3, 19 3.4e-3, 26 2.8e-3 (the
//! floor of the rest). The leading third (rounded down) of the weighted layers therefore stays f32, which
//! leaves the low-resolution encoder and the whole decoder, most of the U-Net's traffic, in
//! f16. The CRNN is within 2e-3 either way.

use crate::kernels::Storage;
use accel_core::{Graph, Op};

/// The share of weighted layers, from the input on, that keep f32 storage under f16.
const F32_LEADING_SHARE: (usize, usize) = (1, 3);

fn weighted(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_) | Op::ConvTranspose(_) | Op::MatMul { .. } | Op::Gemm(_) | Op::Lstm(_)
    )
}

/// The storage of each node of `graph` for an executable of precision `storage`.
pub(crate) fn node_storages(graph: &Graph, storage: Storage) -> Vec<Storage> {
    if storage == Storage::F32 {
        return vec![Storage::F32; graph.nodes.len()];
    }
    let layers = graph.nodes.iter().filter(|n| weighted(&n.op)).count();
    // Rounded down: a graph of one or two layers (an operator's test, say) runs all in f16.
    let (num, den) = F32_LEADING_SHARE;
    let leading = layers * num / den;
    // Nodes up to the first weighted layer past the leading share (its activation and
    // elementwise neighbours included) stay f32.
    let mut seen = 0;
    graph
        .nodes
        .iter()
        .map(|n| {
            if weighted(&n.op) {
                seen += 1;
            }
            if seen <= leading {
                Storage::F32
            } else {
                Storage::F16
            }
        })
        .collect()
}
