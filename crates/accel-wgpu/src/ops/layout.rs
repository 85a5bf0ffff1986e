//! Transpose, Slice and Concat as strided copies (`kernels/layout.wgsl`).

use super::elementwise::padded;
use super::{Lowering, Operand};
use crate::kernels::{Family, Kernel};
use accel_core::ops::{Slices, normalize_axis, transpose_strides};
use accel_core::{Error, Node, Result};

const COPY: Kernel = Kernel {
    family: Family::Layout,
    entry: "copy_strided",
};

fn contiguous(shape: &[usize]) -> Vec<isize> {
    let mut s = vec![1isize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as isize;
    }
    s
}

/// dst[dst_offset + i·dst_strides] = src[src_offset + i·src_strides] over `dims`.
#[allow(clippy::too_many_arguments)]
fn copy(
    l: &mut Lowering,
    node: &Node,
    src: Operand,
    dst: usize,
    dims: &[usize],
    (src_offset, src_strides): (isize, &[isize]),
    (dst_offset, dst_strides): (isize, &[isize]),
) -> Result<()> {
    let n: usize = dims.iter().product();
    if n == 0 {
        return Ok(());
    }
    let [d, ss] = padded(node, dims, src_strides)?;
    let [_, ds] = padded(node, dims, dst_strides)?;
    let off = |v: isize| {
        i32::try_from(v)
            .map(|v| v as u32)
            .map_err(|_| Error::node(node, format!("offset {v} does not fit 32 bits")))
    };
    let mut params = vec![
        Lowering::u32_of(node, n)?,
        off(src_offset)?,
        off(dst_offset)?,
        0,
    ];
    params.extend(d);
    params.extend(ss);
    params.extend(ds);
    l.dispatch_flat(
        node,
        COPY,
        params,
        vec![(1, src), (2, Operand::Value(dst))],
        n,
    )
}

pub(super) fn transpose(l: &mut Lowering, node: &Node, perm: Option<&[usize]>) -> Result<()> {
    let shape = l.input_shape(node, 0)?;
    let reversed: Vec<usize> = (0..shape.len()).rev().collect();
    let perm = perm.unwrap_or(&reversed);
    let (out_shape, src_strides) =
        transpose_strides(&shape, perm).map_err(|e| Error::node(node, e.to_string()))?;
    let x = l.input(node, 0)?;
    let out = l.output(node, 0)?;
    let dst = contiguous(&out_shape);
    copy(l, node, x, out, &out_shape, (0, &src_strides), (0, &dst))
}

pub(super) fn slice(l: &mut Lowering, node: &Node) -> Result<()> {
    let shape = l.input_shape(node, 0)?;
    let ints = |i: usize, what: &str| -> Result<Option<Vec<i64>>> {
        if !Lowering::has_input(node, i) {
            return Ok(None);
        }
        Ok(Some(l.const_input(node, i, what)?.to_i64_vec()?))
    };
    let starts = ints(1, "starts")?.ok_or_else(|| Error::node(node, "Slice needs starts"))?;
    let ends = ints(2, "ends")?.ok_or_else(|| Error::node(node, "Slice needs ends"))?;
    let axes = ints(3, "axes")?;
    let steps = ints(4, "steps")?;
    let s = Slices::new(&shape, &starts, &ends, axes.as_deref(), steps.as_deref())
        .map_err(|e| Error::node(node, e.to_string()))?;
    let (base, src_strides) = s.src_strides(&shape);
    let x = l.input(node, 0)?;
    let out = l.output(node, 0)?;
    let dst = contiguous(&s.out_shape);
    copy(
        l,
        node,
        x,
        out,
        &s.out_shape,
        (base, &src_strides),
        (0, &dst),
    )
}

pub(super) fn concat(l: &mut Lowering, node: &Node, axis: i64) -> Result<()> {
    let out_name = node
        .outputs
        .first()
        .ok_or_else(|| Error::node(node, "no output"))?;
    let out_shape = l.shape(out_name)?;
    let axis =
        normalize_axis(axis, out_shape.len()).map_err(|e| Error::node(node, e.to_string()))?;
    let out = l.output(node, 0)?;
    let dst_strides = contiguous(&out_shape);
    let mut at = 0usize;
    for i in 0..node.inputs.len() {
        if !Lowering::has_input(node, i) {
            continue;
        }
        let shape = l.input_shape(node, i)?;
        let x = l.input(node, i)?;
        let src = contiguous(&shape);
        let offset = at as isize * dst_strides[axis];
        copy(l, node, x, out, &shape, (0, &src), (offset, &dst_strides))?;
        at += shape[axis];
    }
    Ok(())
}
