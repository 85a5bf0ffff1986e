//! Unary activations, broadcasting binary arithmetic, and BatchNormalization (as a scale and
//! a shift per channel) on `kernels/elementwise.wgsl`.

use super::{Lowering, Operand};
use crate::kernels::{Family, Kernel};
use accel_core::ir::{BinaryOp, UnaryOp};
use accel_core::ops::broadcast_shapes;
use accel_core::{Error, Node, Result};

const UNARY: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "unary",
};
const BINARY: Kernel = Kernel {
    family: Family::Elementwise,
    entry: "binary",
};

/// The kernels index with 6 axes.
pub(super) const MAX_RANK: usize = 6;

fn unary_code(u: UnaryOp) -> Option<u32> {
    Some(match u {
        UnaryOp::Relu => 1,
        UnaryOp::Sigmoid => 3,
        UnaryOp::Tanh => 4,
        UnaryOp::Exp => 16,
        UnaryOp::Log => 17,
        UnaryOp::Neg => 18,
        UnaryOp::Abs => 19,
        UnaryOp::Sqrt => 20,
        UnaryOp::Reciprocal => 21,
        UnaryOp::Floor => 22,
        UnaryOp::Ceil => 23,
        UnaryOp::Erf | UnaryOp::Not => return None,
    })
}

fn map(l: &mut Lowering, node: &Node, code: u32, lo: f32, hi: f32) -> Result<()> {
    let x = l.input(node, 0)?;
    let n: usize = l.input_shape(node, 0)?.iter().product();
    let out = l.output(node, 0)?;
    let params = vec![Lowering::u32_of(node, n)?, code, lo.to_bits(), hi.to_bits()];
    l.dispatch_flat(
        node,
        UNARY,
        params,
        vec![(1, x), (3, Operand::Value(out))],
        n,
    )
}

pub(super) fn unary(l: &mut Lowering, node: &Node, u: UnaryOp) -> Result<()> {
    let code = unary_code(u)
        .ok_or_else(|| Error::node(node, format!("the wgpu backend has no kernel for {u:?}")))?;
    map(l, node, code, 0.0, 0.0)
}

/// A scalar bound of Clip (input 1 or 2), or `default` when absent.
fn bound(l: &Lowering, node: &Node, i: usize, default: f32) -> Result<f32> {
    if !Lowering::has_input(node, i) {
        return Ok(default);
    }
    let t = l.const_input(node, i, "a Clip bound")?;
    let v = t.to_f32_vec()?;
    match v.as_slice() {
        [b] => Ok(*b),
        _ => Err(Error::node(node, "a Clip bound must be a scalar")),
    }
}

pub(super) fn clip(l: &mut Lowering, node: &Node) -> Result<()> {
    let lo = bound(l, node, 1, f32::NEG_INFINITY)?;
    let hi = bound(l, node, 2, f32::INFINITY)?;
    map(l, node, 2, lo, hi)
}

pub(super) fn leaky_relu(l: &mut Lowering, node: &Node, alpha: f32) -> Result<()> {
    map(l, node, 5, alpha, 0.0)
}

fn binary_code(b: BinaryOp) -> Option<u32> {
    Some(match b {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Pow => 4,
        BinaryOp::Max => 5,
        BinaryOp::Min => 6,
        _ => return None,
    })
}

/// dims and strides padded to the kernels' 6 axes with leading ones (and zero strides).
pub(super) fn padded(node: &Node, dims: &[usize], strides: &[isize]) -> Result<[[u32; 6]; 2]> {
    if dims.len() > MAX_RANK {
        return Err(Error::node(
            node,
            format!("rank {} is above the wgpu kernels' {MAX_RANK}", dims.len()),
        ));
    }
    let mut d = [1u32; 6];
    let mut s = [0u32; 6];
    let lead = MAX_RANK - dims.len();
    for (i, (&dim, &st)) in dims.iter().zip(strides).enumerate() {
        d[lead + i] = Lowering::u32_of(node, dim)?;
        // Strides go as i32 bits: the layout kernel's may be negative.
        let st = i32::try_from(st)
            .map_err(|_| Error::node(node, format!("stride {st} does not fit 32 bits")))?;
        s[lead + i] = st as u32;
    }
    Ok([d, s])
}

/// out = a op b over the broadcast shape; `a_shape`/`b_shape` are the operands' shapes.
pub(super) fn broadcast(
    l: &mut Lowering,
    node: &Node,
    code: u32,
    (a, a_shape): (Operand, &[usize]),
    (b, b_shape): (Operand, &[usize]),
    out: usize,
) -> Result<()> {
    let shape = broadcast_shapes(a_shape, b_shape).map_err(|e| Error::node(node, e.to_string()))?;
    let n: usize = shape.iter().product();
    let sa = accel_core::ops::broadcast_src_strides(a_shape, &shape);
    let sb = accel_core::ops::broadcast_src_strides(b_shape, &shape);
    let [dims, a_strides] = padded(node, &shape, &sa)?;
    let [_, b_strides] = padded(node, &shape, &sb)?;
    let mut params = vec![Lowering::u32_of(node, n)?, shape.len() as u32, code, 0];
    params.extend(dims);
    params.extend(a_strides);
    params.extend(b_strides);
    l.dispatch_flat(
        node,
        BINARY,
        params,
        vec![(1, a), (2, b), (3, Operand::Value(out))],
        n,
    )
}

pub(super) fn binary(l: &mut Lowering, node: &Node, op: BinaryOp) -> Result<()> {
    let code = binary_code(op)
        .ok_or_else(|| Error::node(node, format!("the wgpu backend has no kernel for {op:?}")))?;
    let (sa, sb) = (l.input_shape(node, 0)?, l.input_shape(node, 1)?);
    let (a, b) = (l.input(node, 0)?, l.input(node, 1)?);
    let out = l.output(node, 0)?;
    broadcast(l, node, code, (a, &sa), (b, &sb), out)
}

/// BatchNormalization in inference mode: x * scale + shift per channel (axis 1), scale and
/// shift computed once from the constant statistics.
pub(super) fn batch_norm(l: &mut Lowering, node: &Node, epsilon: f32) -> Result<()> {
    let shape = l.input_shape(node, 0)?;
    if shape.len() < 2 {
        return Err(Error::node(node, "BatchNormalization needs a channel axis"));
    }
    let c = shape[1];
    let stat = |i: usize, what: &str| -> Result<Vec<f32>> {
        let v = l.const_input(node, i, what)?.to_f32_vec()?;
        if v.len() != c {
            return Err(Error::node(
                node,
                format!("{what} has {} values for {c} channels", v.len()),
            ));
        }
        Ok(v)
    };
    let (gamma, beta, mean, var) = (
        stat(1, "the scale")?,
        stat(2, "the bias")?,
        stat(3, "the mean")?,
        stat(4, "the variance")?,
    );
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + epsilon).sqrt())
        .collect();
    let shift: Vec<f32> = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    let scale = Operand::Const(l.upload_f32(&format!("{}#scale", node.name), scale)?);
    let shift = Operand::Const(l.upload_f32(&format!("{}#shift", node.name), shift)?);
    let x = l.input(node, 0)?;
    let mut per_channel = vec![1; shape.len()];
    per_channel[1] = c;
    let n: usize = shape.iter().product();
    let scaled = l.temp(node, n)?;
    let out = l.output(node, 0)?;
    broadcast(l, node, 2, (x, &shape), (scale, &per_channel), scaled)?;
    broadcast(
        l,
        node,
        0,
        (Operand::Value(scaled), &shape),
        (shift, &per_channel),
        out,
    )
}
