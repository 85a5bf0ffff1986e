//! LSTM: the input projection of every step and direction as one batched product (biases
//! fused), then `kernels/lstm.wgsl`'s recurrence, one workgroup per direction and batch
//! element looping over the steps with its state in workgroup memory.

use super::matmul::{Strided, product};
use super::{Lowering, Operand};
use crate::kernels::{Family, Kernel};
use accel_core::ir::{Direction, Lstm};
use accel_core::{Error, Node, Result};

const LSTM: Kernel = Kernel {
    family: Family::Lstm,
    entry: "lstm",
};

/// The kernel keeps h, c and the 4H gates of a step in workgroup memory.
const MAX_HIDDEN: usize = 256;

pub(super) fn lstm(l: &mut Lowering, node: &Node, a: &Lstm) -> Result<()> {
    let xs = l.input_shape(node, 0)?;
    let [d0, d1, input] = xs[..] else {
        return Err(Error::node(node, format!("X must be 3-D, not {xs:?}")));
    };
    let (steps, batch) = if a.layout == 1 { (d1, d0) } else { (d0, d1) };
    let h = a.hidden_size;
    if h == 0 || h > MAX_HIDDEN {
        return Err(Error::node(
            node,
            format!("hidden size {h}: the wgpu kernel handles 1 to {MAX_HIDDEN}"),
        ));
    }
    let dirs = if a.direction == Direction::Bidirectional {
        2
    } else {
        1
    };
    let ws = l.input_shape(node, 1)?;
    let rs = l.input_shape(node, 2)?;
    if ws != [dirs, 4 * h, input] || rs != [dirs, 4 * h, h] {
        return Err(Error::node(
            node,
            format!(
                "W {ws:?} and R {rs:?} do not fit {dirs} direction(s), hidden {h}, input {input}"
            ),
        ));
    }
    if Lowering::has_input(node, 7) {
        return Err(Error::node(
            node,
            "the wgpu backend has no LSTM peepholes (input P)",
        ));
    }
    if Lowering::has_input(node, 4) {
        let lens = l.const_input(node, 4, "sequence_lens")?.to_i64_vec()?;
        if lens.iter().any(|&s| s != steps as i64) {
            return Err(Error::node(
                node,
                format!("sequence_lens {lens:?}: the wgpu backend runs full-length sequences only"),
            ));
        }
    }
    // Wb + Rb per direction, one row of 4H each.
    let bias: Vec<f32> = if Lowering::has_input(node, 3) {
        let b = l.const_input(node, 3, "B")?.to_f32_vec()?;
        if b.len() != dirs * 8 * h {
            return Err(Error::node(
                node,
                format!("B has {} values, {} expected", b.len(), dirs * 8 * h),
            ));
        }
        (0..dirs)
            .flat_map(|d| {
                let b = &b[d * 8 * h..(d + 1) * 8 * h];
                (0..4 * h).map(move |j| b[j] + b[4 * h + j])
            })
            .collect()
    } else {
        vec![0.0; dirs * 4 * h]
    };
    let bias = Operand::Const(l.upload_f32(&format!("{}#bias", node.name), bias)?);
    let rows = steps * batch;
    let gx = l.temp(node, dirs * rows * 4 * h)?;
    let x = Strided {
        data: l.input(node, 0)?,
        rs: input,
        cs: 1,
        batch: vec![0],
    };
    // W[d]^T: element (k, j) is W[d][j][k].
    let w = Strided {
        data: l.input(node, 1)?,
        rs: 1,
        cs: input,
        batch: vec![4 * h * input],
    };
    let b = Strided {
        data: bias,
        rs: 0,
        cs: 1,
        batch: vec![4 * h],
    };
    product(
        l,
        node,
        (rows, input, 4 * h),
        &[dirs],
        x,
        w,
        Some((b, 1.0)),
        1.0,
        None,
        gx,
    )?;

    let has_initial = Lowering::has_input(node, 5) || Lowering::has_input(node, 6);
    let zeros = Operand::Const(l.upload_f32(
        &format!("zeros#{}", dirs * batch * h),
        vec![0.0; dirs * batch * h],
    )?);
    let state = |l: &mut Lowering, i: usize| -> Result<Operand> {
        if Lowering::has_input(node, i) {
            l.input(node, i)
        } else {
            Ok(zeros)
        }
    };
    let h0 = state(l, 5)?;
    let c0 = state(l, 6)?;
    let r = l.input(node, 2)?;
    let out = |l: &mut Lowering, i: usize, elems: usize| -> Result<usize> {
        if node.outputs.get(i).is_some_and(|o| !o.is_empty()) {
            l.output(node, i)
        } else {
            l.temp(node, elems)
        }
    };
    let y = out(l, 0, steps * dirs * batch * h)?;
    let yh = out(l, 1, dirs * batch * h)?;
    let yc = out(l, 2, dirs * batch * h)?;
    let u = |v: usize| Lowering::u32_of(node, v);
    let params = vec![
        u(steps)?,
        u(batch)?,
        u(h)?,
        dirs as u32,
        (a.direction == Direction::Reverse) as u32,
        (a.layout == 1) as u32,
        a.clip.is_some() as u32,
        a.clip.unwrap_or(0.0).to_bits(),
        a.input_forget as u32,
        has_initial as u32,
    ];
    if batch > l.gpu_limits_per_dimension() {
        return Err(Error::node(
            node,
            format!("batch {batch} exceeds the dispatch limits"),
        ));
    }
    l.dispatch(
        LSTM,
        params,
        vec![
            (1, Operand::Value(gx)),
            (2, r),
            (3, h0),
            (4, c0),
            (5, Operand::Value(y)),
            (6, Operand::Value(yh)),
            (7, Operand::Value(yc)),
        ],
        [dirs as u32, batch as u32, 1],
    );
    Ok(())
}
