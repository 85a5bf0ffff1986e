//! Softmax and LogSoftmax (`kernels/softmax.wgsl`): one row per invocation.

use super::{Lowering, Operand};
use crate::kernels::{Family, Kernel};
use accel_core::ops::normalize_axis;
use accel_core::{Error, Node, Result};

const SOFTMAX: Kernel = Kernel {
    family: Family::Softmax,
    entry: "softmax",
};

pub(super) fn softmax(
    l: &mut Lowering,
    node: &Node,
    axis: i64,
    legacy: bool,
    log: bool,
) -> Result<()> {
    let shape = l.input_shape(node, 0)?;
    let axis = normalize_axis(axis, shape.len()).map_err(|e| Error::node(node, e.to_string()))?;
    // Before opset 13 the input is flattened to 2-D at `axis`: one row is everything after.
    let (n, inner) = if legacy {
        (shape[axis..].iter().product::<usize>(), 1)
    } else {
        (shape[axis], shape[axis + 1..].iter().product::<usize>())
    };
    let outer: usize = shape[..axis].iter().product();
    let rows = outer * inner;
    let x = l.input(node, 0)?;
    let out = l.output(node, 0)?;
    let params = vec![
        Lowering::u32_of(node, rows)?,
        Lowering::u32_of(node, n)?,
        Lowering::u32_of(node, inner)?,
        log as u32,
    ];
    l.dispatch_flat(
        node,
        SOFTMAX,
        params,
        vec![(1, x), (2, Operand::Value(out))],
        rows,
    )
}
