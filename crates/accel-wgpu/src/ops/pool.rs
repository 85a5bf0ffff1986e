//! MaxPool, AveragePool and their global forms (`kernels/pool.wgsl`).

use super::{Lowering, Operand, window_params};
use crate::kernels::{Family, Kernel};
use accel_core::ir::Pool;
use accel_core::ops::{resolve_window, spatial_2d};
use accel_core::{Error, Node, Result};

const POOL: Kernel = Kernel {
    family: Family::Pool,
    entry: "pool",
};

/// `attrs` None is the global pool (one window over the whole plane).
pub(super) fn pool(
    l: &mut Lowering,
    node: &Node,
    attrs: Option<&Pool>,
    average: bool,
) -> Result<()> {
    if node.outputs.len() > 1 && node.outputs[1..].iter().any(|o| !o.is_empty()) {
        return Err(Error::node(
            node,
            "the wgpu backend has no MaxPool indices output",
        ));
    }
    let shape = l.input_shape(node, 0)?;
    // 1-D pools run as height 1.
    let (nc, hw) = match shape.as_slice() {
        [n, c, w] => (n * c, [1, *w]),
        [n, c, h, w] => (n * c, [*h, *w]),
        _ => {
            return Err(Error::node(
                node,
                format!("the wgpu backend pools 1-D and 2-D images, not {shape:?}"),
            ));
        }
    };
    let one_d = shape.len() == 3;
    let (rw, count_include_pad) = match attrs {
        None => (
            resolve_window(&Default::default(), &hw, &hw, false)
                .map_err(|e| Error::node(node, e.to_string()))?,
            false,
        ),
        Some(p) => {
            let (kernel, w) = spatial_2d(node, &p.window.kernel_shape, &p.window, one_d)?;
            (
                resolve_window(&w, &hw, &kernel, p.ceil_mode)
                    .map_err(|e| Error::node(node, e.to_string()))?,
                p.count_include_pad,
            )
        }
    };
    let n_out = nc * rw.output[0] * rw.output[1];
    let x = l.input(node, 0)?;
    let out = l.output(node, 0)?;
    let u = |v: usize| Lowering::u32_of(node, v);
    let mut params = vec![
        u(n_out)?,
        u(nc)?,
        u(hw[0])?,
        u(hw[1])?,
        u(rw.output[0])?,
        u(rw.output[1])?,
    ];
    params.extend(window_params(node, &rw)?);
    params.extend([
        average as u32,
        count_include_pad as u32,
        u(rw.pads_end[0])?,
        u(rw.pads_end[1])?,
    ]);
    l.dispatch_flat(
        node,
        POOL,
        params,
        vec![(1, x), (2, Operand::Value(out))],
        n_out,
    )
}
