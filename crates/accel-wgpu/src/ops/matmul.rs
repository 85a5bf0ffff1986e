//! MatMul (numpy semantics: 1-D promotion, broadcasting batches) and Gemm on the tiled
//! `kernels/matmul.wgsl`, whose strided operands take transposes for free.

use super::{Lowering, Operand, activation_params};
use crate::kernels::{Family, Kernel};
use accel_core::ir::{Activation, Gemm};
use accel_core::ops::{broadcast_shapes, broadcast_src_strides};
use accel_core::{Error, Node, Result};

const MATMUL: Kernel = Kernel {
    family: Family::Matmul,
    entry: "matmul",
};

/// Batch axes the kernel walks.
const MAX_BATCH_RANK: usize = 4;

/// One operand: its buffer, offsets of (row, column) steps, and per batch axis the stride.
pub(super) struct Strided {
    pub data: Operand,
    pub rs: usize,
    pub cs: usize,
    pub batch: Vec<usize>,
}

/// The product of `batch_dims` batches of [m, k]·[k, n] into `out`, with
/// out = act(alpha · A·B + beta · C).
#[allow(clippy::too_many_arguments)]
pub(super) fn product(
    l: &mut Lowering,
    node: &Node,
    (m, k, n): (usize, usize, usize),
    batch_dims: &[usize],
    a: Strided,
    b: Strided,
    c: Option<(Strided, f32)>,
    alpha: f32,
    act: Option<Activation>,
    out: usize,
) -> Result<()> {
    if batch_dims.len() > MAX_BATCH_RANK {
        return Err(Error::node(
            node,
            format!(
                "{} batch axes are more than the wgpu kernel's {MAX_BATCH_RANK}",
                batch_dims.len()
            ),
        ));
    }
    let u = |v: usize| Lowering::u32_of(node, v);
    let lead = MAX_BATCH_RANK - batch_dims.len();
    let pad = |v: &[usize], fill: u32| -> Result<[u32; 4]> {
        let mut r = [fill; 4];
        for (i, &x) in v.iter().enumerate() {
            r[lead + i] = u(x)?;
        }
        Ok(r)
    };
    let batches: usize = batch_dims.iter().product();
    let zeros = Operand::Const(l.upload_f32("zeros#1", vec![0.0])?);
    let (c_data, c_rs, c_cs, c_batch, beta) = match &c {
        Some((s, beta)) => (s.data, s.rs, s.cs, s.batch.clone(), *beta),
        None => (zeros, 0, 0, vec![0; batch_dims.len()], 0.0),
    };
    let mut params = vec![u(m)?, u(n)?, u(k)?, 0];
    params.extend(pad(batch_dims, 1)?);
    params.extend(pad(&a.batch, 0)?);
    params.extend(pad(&b.batch, 0)?);
    params.extend(pad(&c_batch, 0)?);
    params.extend([u(a.rs)?, u(a.cs)?, u(b.rs)?, u(b.cs)?]);
    params.extend(activation_params(act));
    params.extend([
        c.is_some() as u32,
        u(c_rs)?,
        u(c_cs)?,
        alpha.to_bits(),
        beta.to_bits(),
    ]);
    let groups = [n.div_ceil(16), m.div_ceil(16), batches];
    let max = l.gpu_limits_per_dimension();
    if groups.iter().any(|&g| g > max) {
        return Err(Error::node(
            node,
            format!(
                "a {m}x{k} by {k}x{n} product over {batches} batches exceeds the dispatch limits"
            ),
        ));
    }
    l.dispatch(
        MATMUL,
        params,
        vec![
            (1, a.data),
            (2, b.data),
            (3, c_data),
            (4, Operand::Value(out)),
        ],
        [groups[0] as u32, groups[1] as u32, groups[2] as u32],
    );
    Ok(())
}

/// Batch strides of an operand with batch axes `dims` broadcast to `out`, `step` apart.
fn batch_strides(dims: &[usize], out: &[usize], step: usize) -> Vec<usize> {
    broadcast_src_strides(dims, out)
        .iter()
        .map(|&s| s as usize * step)
        .collect()
}

pub(super) fn matmul(l: &mut Lowering, node: &Node, act: Option<Activation>) -> Result<()> {
    let (sa, sb) = (l.input_shape(node, 0)?, l.input_shape(node, 1)?);
    // 1-D operands are promoted to a row (A) or a column (B).
    let a2 = if sa.len() == 1 {
        vec![1, sa[0]]
    } else {
        sa.clone()
    };
    let b2 = if sb.len() == 1 {
        vec![sb[0], 1]
    } else {
        sb.clone()
    };
    if a2.len() < 2 || b2.len() < 2 {
        return Err(Error::node(
            node,
            "MatMul operands must have a rank of at least 1",
        ));
    }
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(Error::node(
            node,
            format!("MatMul of {sa:?} and {sb:?}: inner sizes differ"),
        ));
    }
    let (ba, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let batch = broadcast_shapes(ba, bb).map_err(|e| Error::node(node, e.to_string()))?;
    let a = Strided {
        data: l.input(node, 0)?,
        rs: k,
        cs: 1,
        batch: batch_strides(ba, &batch, m * k),
    };
    let b = Strided {
        data: l.input(node, 1)?,
        rs: n,
        cs: 1,
        batch: batch_strides(bb, &batch, k * n),
    };
    let out = l.output(node, 0)?;
    product(l, node, (m, k, n), &batch, a, b, None, 1.0, act, out)
}

pub(super) fn gemm(l: &mut Lowering, node: &Node, g: &Gemm) -> Result<()> {
    let (sa, sb) = (l.input_shape(node, 0)?, l.input_shape(node, 1)?);
    if sa.len() != 2 || sb.len() != 2 {
        return Err(Error::node(
            node,
            format!("Gemm needs 2-D operands, not {sa:?} and {sb:?}"),
        ));
    }
    // Element (i, k) of op(A) sits at i * rs + k * cs.
    let (m, k, a_rs, a_cs) = if g.trans_a {
        (sa[1], sa[0], 1, sa[1])
    } else {
        (sa[0], sa[1], sa[1], 1)
    };
    let (kb, n, b_rs, b_cs) = if g.trans_b {
        (sb[1], sb[0], 1, sb[1])
    } else {
        (sb[0], sb[1], sb[1], 1)
    };
    if k != kb {
        return Err(Error::node(
            node,
            format!("Gemm of {sa:?} and {sb:?}: inner sizes differ"),
        ));
    }
    let a = Strided {
        data: l.input(node, 0)?,
        rs: a_rs,
        cs: a_cs,
        batch: vec![],
    };
    let b = Strided {
        data: l.input(node, 1)?,
        rs: b_rs,
        cs: b_cs,
        batch: vec![],
    };
    let c = if Lowering::has_input(node, 2) && g.beta != 0.0 {
        let sc = l.input_shape(node, 2)?;
        if broadcast_shapes(&sc, &[m, n]).ok().as_deref() != Some(&[m, n][..]) {
            return Err(Error::node(
                node,
                format!("C {sc:?} does not broadcast to [{m}, {n}]"),
            ));
        }
        let st = broadcast_src_strides(&sc, &[m, n]);
        Some((
            Strided {
                data: l.input(node, 2)?,
                rs: st[0] as usize,
                cs: st[1] as usize,
                batch: vec![],
            },
            g.beta,
        ))
    } else {
        None
    };
    let out = l.output(node, 0)?;
    product(l, node, (m, k, n), &[], a, b, c, g.alpha, g.activation, out)
}
