//! Image-parallel runs: a batch split into one sub-batch per worker, each sub-batch run
//! through the whole graph by one thread.
//!
//! Within an operator the workers split each tensor between them, and the next operator
//! often splits it along another axis, so much of what one core writes the other reads
//! next. On a VM whose two vCPUs sit far apart (a 400 ns core-to-core round trip against
//! 60 ns when close) that traffic cost accel a third of its 2-thread speed at batch 8.
//! Sub-batches share nothing but the weights. Only graphs whose every operator treats the
//! images of a batch independently are split ([`separable`]).

use accel_core::ir::{Dim, Graph, Node, Op};
use accel_core::{Result, TensorDataRef, TensorView};
use std::collections::HashSet;

/// Whether every image of a batch goes through `graph` alone: each input has a symbolic
/// leading (batch) axis, every operator reading a value derived from the inputs keeps that
/// axis first and never mixes images, and every output carries it.
pub(crate) fn separable(graph: &Graph) -> bool {
    let symbolic_batch = |shape: &Option<Vec<Dim>>| {
        shape
            .as_ref()
            .is_some_and(|s| s.first().is_some_and(|d| d.known().is_none()))
    };
    if graph.inputs.is_empty() || !graph.inputs.iter().all(|v| symbolic_batch(&v.shape)) {
        return false;
    }
    let mut batched: HashSet<&str> = graph.inputs.iter().map(|v| v.name.as_str()).collect();
    for node in &graph.nodes {
        let reads: Vec<bool> = node
            .inputs
            .iter()
            .map(|i| batched.contains(i.as_str()))
            .collect();
        if !reads.contains(&true) {
            continue;
        }
        if !image_wise(graph, node, &reads) {
            return false;
        }
        batched.extend(
            node.outputs
                .iter()
                .filter(|o| !o.is_empty())
                .map(String::as_str),
        );
    }
    graph
        .outputs
        .iter()
        .all(|o| batched.contains(o.name.as_str()))
}

/// Whether `node`, whose inputs flagged in `batched` carry the batch axis first, computes
/// each image of its outputs from the same image of those inputs alone.
fn image_wise(graph: &Graph, node: &Node, batched: &[bool]) -> bool {
    let dims = |i: usize| -> Option<Vec<Dim>> {
        node.inputs
            .get(i)
            .filter(|n| !n.is_empty())
            .and_then(|n| graph.value_type(n)?.shape)
    };
    let rank = |i: usize| dims(i).map(|d| d.len());
    let out_rank = node
        .outputs
        .first()
        .and_then(|o| graph.value_type(o)?.shape)
        .map(|s| s.len());
    // The axis an attribute names, made non-negative with input 0's rank.
    let axis = |a: i64| -> Option<usize> {
        let r = rank(0)? as i64;
        let a = if a < 0 { a + r } else { a };
        (0..r).contains(&a).then_some(a as usize)
    };
    let only_first = batched[0] && !batched[1..].contains(&true);
    let constant = |i: usize| node.input(i).and_then(|n| graph.constant(n));
    match &node.op {
        Op::Conv(_)
        | Op::ConvTranspose(_)
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::GlobalAveragePool
        | Op::GlobalMaxPool
        | Op::BatchNormalization { .. }
        | Op::Unary(_)
        | Op::Clip
        | Op::LeakyRelu { .. }
        | Op::Cast { .. }
        | Op::Identity
        | Op::Dropout => only_first,
        // Broadcasting must not line a batched axis up with anything but the batch.
        Op::Binary(_) | Op::Where => {
            let Some(r) = out_rank else { return false };
            (0..node.inputs.len()).all(|i| match (batched[i], dims(i)) {
                (true, Some(d)) => d.len() == r,
                (false, Some(d)) => d.len() < r || d.first() == Some(&Dim::Known(1)),
                (_, None) => node.inputs[i].is_empty(),
            })
        }
        Op::Softmax { axis: a, .. } | Op::LogSoftmax { axis: a, .. } => {
            only_first && axis(*a).is_some_and(|a| a > 0)
        }
        Op::Flatten { axis: a } => only_first && axis(*a).is_some_and(|a| a > 0),
        Op::Concat { axis: a } => {
            let all = node
                .inputs
                .iter()
                .zip(batched)
                .all(|(n, &b)| b || n.is_empty());
            all && axis(*a).is_some_and(|a| a > 0)
        }
        Op::Transpose { perm } => {
            only_first && perm.as_ref().is_some_and(|p| p.first() == Some(&0))
        }
        Op::Reshape { allowzero } => {
            let (Some(d), Some(s)) = (dims(0), constant(1)) else {
                return false;
            };
            let Ok(s) = s.to_i64_vec() else { return false };
            only_first && keeps_batch(&d, &s, *allowzero)
        }
        Op::Pad { .. } => {
            // Explicit axes (opset 18) are not followed here.
            let (Some(r), Some(p)) = (rank(0), constant(1)) else {
                return false;
            };
            let no_axes = node.input(3).is_none();
            let pads = p.to_i64_vec().unwrap_or_default();
            only_first && no_axes && pads.len() == 2 * r && pads[0] == 0 && pads[r] == 0
        }
        _ => false,
    }
}

/// Whether a Reshape of an input with dims `d` to `shape` maps each image to an image:
/// the batch axis copied (0) or inferred (-1) from the same per-image size.
fn keeps_batch(d: &[Dim], shape: &[i64], allowzero: bool) -> bool {
    let Some((&first, rest)) = shape.split_first() else {
        return false;
    };
    let image: Option<usize> = d.iter().skip(1).map(Dim::known).product();
    let resolved: Option<usize> = rest
        .iter()
        .enumerate()
        .map(|(i, &s)| match s {
            0 if !allowzero => d.get(i + 1).and_then(Dim::known),
            s if s > 0 => Some(s as usize),
            _ => None,
        })
        .product();
    match first {
        0 => !allowzero && image.is_some() && image == resolved,
        -1 => image.is_some() && image == resolved,
        _ => false,
    }
}

/// How `n` images are shared among `workers`, or `None` when splitting would leave workers
/// unevenly loaded: an even split, or one where sizes differ by one and each worker has at
/// least four images.
pub(crate) fn split_sizes(n: usize, workers: usize) -> Option<Vec<usize>> {
    if workers < 2 || n < 2 || (!n.is_multiple_of(workers) && n < 4 * workers) {
        return None;
    }
    Some(
        (0..workers)
            .map(|w| n / workers + usize::from(w < n % workers))
            .collect(),
    )
}

/// Images `start .. start + count` of a view whose leading axis is the batch; `shape` is
/// the sub-batch's shape (`count` first, then the view's other dims).
pub(crate) fn images<'a>(
    x: &TensorView<'a>,
    start: usize,
    shape: &'a [usize],
) -> Result<TensorView<'a>> {
    let image: usize = x.shape().iter().skip(1).product();
    let range = start * image..(start + shape[0]) * image;
    let data = match x.data() {
        TensorDataRef::F32(v) => TensorDataRef::F32(&v[range]),
        TensorDataRef::F16(v) => TensorDataRef::F16(&v[range]),
        TensorDataRef::I64(v) => TensorDataRef::I64(&v[range]),
        TensorDataRef::I32(v) => TensorDataRef::I32(&v[range]),
        TensorDataRef::U8(v) => TensorDataRef::U8(&v[range]),
        TensorDataRef::Bool(v) => TensorDataRef::Bool(&v[range]),
    };
    TensorView::new(shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_evenly_or_with_four_images_a_worker() {
        assert_eq!(split_sizes(8, 2), Some(vec![4, 4]));
        assert_eq!(split_sizes(2, 2), Some(vec![1, 1]));
        assert_eq!(split_sizes(9, 2), Some(vec![5, 4]));
        assert_eq!(split_sizes(13, 3), Some(vec![5, 4, 4]));
        assert_eq!(split_sizes(3, 2), None);
        assert_eq!(split_sizes(7, 2), None);
        assert_eq!(split_sizes(1, 2), None);
        assert_eq!(split_sizes(8, 1), None);
        assert_eq!(split_sizes(0, 2), None);
    }

    #[test]
    fn reshapes_keep_the_batch_only_image_by_image() {
        let d = [
            Dim::Sym("n".into()),
            Dim::Known(1),
            Dim::Known(4),
            Dim::Known(4),
        ];
        assert!(keeps_batch(&d, &[-1, 4, 4, 1], false));
        assert!(keeps_batch(&d, &[0, 16], false));
        assert!(keeps_batch(&d, &[-1, 0, 16], false));
        // Images merged or split, the batch not first, or sizes that do not match.
        assert!(!keeps_batch(&d, &[-1, 8], false));
        assert!(!keeps_batch(&d, &[16, -1], false));
        assert!(!keeps_batch(&d, &[-1, -1], false));
        assert!(!keeps_batch(&d, &[0, 16], true));
        assert!(!keeps_batch(&d, &[], false));
        let unknown = [Dim::Sym("n".into()), Dim::Sym("c".into())];
        assert!(!keeps_batch(&unknown, &[-1, 4], false));
    }
}
