//! MatMul (numpy semantics, broadcasting batch axes) and Gemm, on the packed GEMM.

use super::gemm::{Bias, Epilogue, PackedA, PackedB, gemm};
use super::{check_out_len, new_output};
use accel_core::ir::{Activation, Gemm, Node};
use accel_core::ops::broadcast_shapes;
use accel_core::{Error, Result, Tensor, TensorView, shape_err};

fn f32s<'a>(node: &Node, t: &TensorView<'a>) -> Result<&'a [f32]> {
    t.as_slice::<f32>()
        .map_err(|e| Error::node(node, e.to_string()))
}

/// MatMul whose B may be a constant packed at compile time.
pub struct MatMulKernel {
    /// Constant 2-D B, packed, with its [K, N].
    packed_b: Option<(PackedB, usize, usize)>,
    activation: Option<Activation>,
}

impl MatMulKernel {
    /// Holds a constant B as f16 from now on.
    pub fn use_f16_weights(&mut self) {
        if let Some((pb, _, _)) = &mut self.packed_b {
            *pb = pb.to_f16();
        }
    }

    /// Bytes of weights this kernel holds.
    pub fn weight_bytes(&self) -> usize {
        self.packed_b.as_ref().map_or(0, |(pb, _, _)| pb.bytes())
    }

    pub fn new(
        node: &Node,
        b: Option<&Tensor>,
        activation: Option<Activation>,
    ) -> Result<MatMulKernel> {
        let packed_b = match b {
            Some(b) if b.rank() == 2 => {
                let (k, n) = (b.shape()[0], b.shape()[1]);
                Some((PackedB::pack(f32s(node, &b.view())?, k, n, n, 1), k, n))
            }
            _ => None,
        };
        Ok(MatMulKernel {
            packed_b,
            activation,
        })
    }

    /// Output shape of A·B.
    pub fn output_shape(&self, node: &Node, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
        match &self.packed_b {
            Some((_, k, n)) => {
                if a.last() != Some(k) {
                    return Err(Error::node(
                        node,
                        format!("MatMul of {a:?} by [{k}, {n}]: inner dimensions differ"),
                    ));
                }
                let mut shape = a[..a.len() - 1].to_vec();
                shape.push(*n);
                Ok(shape)
            }
            None => Ok(general_geometry(node, a, b)?.shape),
        }
    }

    pub fn run(&self, node: &Node, a: TensorView, b: TensorView) -> Result<Tensor> {
        let shape = self.output_shape(node, a.shape(), b.shape())?;
        new_output(node, shape, |out| self.run_into(node, a, b, out))
    }

    /// Writes A·B into `out` (every element).
    pub fn run_into(
        &self,
        node: &Node,
        a: TensorView,
        b: TensorView,
        out: &mut [f32],
    ) -> Result<()> {
        let shape = self.output_shape(node, a.shape(), b.shape())?;
        check_out_len(node, &shape, out)?;
        let ep = Epilogue {
            bias: Bias::None,
            activation: self.activation,
            residual: None,
        };
        let av = f32s(node, &a)?;
        match &self.packed_b {
            Some((pb, k, n)) => {
                let rows = out.len() / n.max(&1);
                let pa = PackedA::pack_pooled(av, rows, *k, *k, 1);
                gemm(&pa, pb, out, *n, ep);
            }
            None => matmul_general(node, av, a.shape(), f32s(node, &b)?, b.shape(), ep, out)?,
        }
        Ok(())
    }
}

struct General {
    shape: Vec<usize>,
    /// Broadcast batch axes.
    batch: Vec<usize>,
    ash: Vec<usize>,
    bsh: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
}

/// Shapes of a MatMul with numpy semantics: 1-D operands promoted, batch axes broadcast.
fn general_geometry(node: &Node, a: &[usize], b: &[usize]) -> Result<General> {
    if a.is_empty() || b.is_empty() {
        return Err(Error::node(node, "MatMul does not take scalars"));
    }
    let ash: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let bsh: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
    if k != k2 {
        return Err(Error::node(
            node,
            shape_err!("MatMul inner dimensions differ: {a:?} x {b:?}").to_string(),
        ));
    }
    let batch = broadcast_shapes(&ash[..ash.len() - 2], &bsh[..bsh.len() - 2])
        .map_err(|e| Error::node(node, e.to_string()))?;
    let mut shape = batch.clone();
    if a.len() > 1 {
        shape.push(m);
    }
    if b.len() > 1 {
        shape.push(n);
    }
    accel_core::checked_numel(&shape).map_err(|e| Error::node(node, e.to_string()))?;
    Ok(General {
        shape,
        batch,
        ash,
        bsh,
        m,
        k,
        n,
    })
}

/// Both operands at run time, with numpy broadcasting of the batch axes.
fn matmul_general(
    node: &Node,
    av: &[f32],
    a_shape: &[usize],
    bv: &[f32],
    b_shape: &[usize],
    ep: Epilogue,
    out: &mut [f32],
) -> Result<()> {
    let General {
        batch,
        ash,
        bsh,
        m,
        k,
        n,
        ..
    } = general_geometry(node, a_shape, b_shape)?;
    let nb: usize = batch.iter().product();
    let index_of = |shape: &[usize], flat: usize| -> usize {
        // Maps a broadcast batch index to the operand's own batch index.
        let mut rem = flat;
        let mut idx = 0;
        let mut stride = 1;
        for (d, &bd) in batch.iter().enumerate().rev() {
            let i = rem % bd;
            rem /= bd;
            let off = d as isize - (batch.len() as isize - shape.len() as isize);
            if off >= 0 {
                let sd = shape[off as usize];
                idx += if sd == 1 { 0 } else { i } * stride;
                stride *= sd;
            }
        }
        idx
    };
    if m * n == 0 {
        return Ok(());
    }
    for bi in 0..nb {
        let ai = index_of(&ash[..ash.len() - 2], bi);
        let bj = index_of(&bsh[..bsh.len() - 2], bi);
        let pa = PackedA::pack_pooled(&av[ai * m * k..], m, k, k, 1);
        let pb = PackedB::pack(&bv[bj * k * n..], k, n, n, 1);
        gemm(&pa, &pb, &mut out[bi * m * n..(bi + 1) * m * n], n, ep);
    }
    Ok(())
}

/// Gemm: Y = alpha * A' · B' + beta * C, with constant B packed (and alpha folded in).
pub struct GemmKernel {
    attrs: Gemm,
    packed_b: Option<PackedB>,
}

impl GemmKernel {
    /// Holds a constant B as f16 from now on.
    pub fn use_f16_weights(&mut self) {
        if let Some(pb) = &mut self.packed_b {
            *pb = pb.to_f16();
        }
    }

    /// Bytes of weights this kernel holds.
    pub fn weight_bytes(&self) -> usize {
        self.packed_b.as_ref().map_or(0, PackedB::bytes)
    }

    pub fn new(node: &Node, attrs: &Gemm, b: Option<&Tensor>) -> Result<GemmKernel> {
        let packed_b = match b {
            Some(b) if b.rank() == 2 => Some(pack_gemm_b(node, attrs, &b.view())?),
            Some(_) => return Err(Error::node(node, "Gemm's B must be 2-D")),
            None => None,
        };
        Ok(GemmKernel {
            attrs: attrs.clone(),
            packed_b,
        })
    }

    /// Output shape [M, N].
    pub fn output_shape(&self, node: &Node, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
        if a.len() != 2 || b.len() != 2 {
            return Err(Error::node(
                node,
                format!("Gemm needs 2-D A and B, got {a:?} and {b:?}"),
            ));
        }
        let g = &self.attrs;
        let m = if g.trans_a { a[1] } else { a[0] };
        let n = match (&self.packed_b, g.trans_b) {
            (Some(pb), _) => pb.n,
            (None, true) => b[0],
            (None, false) => b[1],
        };
        Ok(vec![m, n])
    }

    pub fn run(
        &self,
        node: &Node,
        a: TensorView,
        b: TensorView,
        c: Option<TensorView>,
    ) -> Result<Tensor> {
        let shape = self.output_shape(node, a.shape(), b.shape())?;
        new_output(node, shape, |out| self.run_into(node, a, b, c, out))
    }

    /// Writes Y into `out` (every element).
    pub fn run_into(
        &self,
        node: &Node,
        a: TensorView,
        b: TensorView,
        c: Option<TensorView>,
        out: &mut [f32],
    ) -> Result<()> {
        check_out_len(node, &self.output_shape(node, a.shape(), b.shape())?, out)?;
        if a.shape().len() != 2 || b.shape().len() != 2 {
            return Err(Error::node(
                node,
                format!(
                    "Gemm needs 2-D A and B, got {:?} and {:?}",
                    a.shape(),
                    b.shape()
                ),
            ));
        }
        let g = &self.attrs;
        let (m, k) = if g.trans_a {
            (a.shape()[1], a.shape()[0])
        } else {
            (a.shape()[0], a.shape()[1])
        };
        let owned;
        let pb = match &self.packed_b {
            Some(pb) => pb,
            None => {
                owned = pack_gemm_b(node, g, &b)?;
                &owned
            }
        };
        if pb.k != k {
            return Err(Error::node(
                node,
                format!(
                    "Gemm inner dimensions differ: A {:?} vs B {:?}",
                    a.shape(),
                    b.shape()
                ),
            ));
        }
        let n = pb.n;
        let av = f32s(node, &a)?;
        let pa = if g.trans_a {
            PackedA::pack_pooled(av, m, k, 1, m)
        } else {
            PackedA::pack_pooled(av, m, k, k, 1)
        };
        // C broadcasts to [M, N]: a row vector becomes a column bias, a column vector a row bias.
        let cv: Option<Vec<f32>> = c
            .as_ref()
            .map(|c| c.to_tensor().to_f32_vec())
            .transpose()?
            .map(|v| v.iter().map(|x| x * g.beta).collect());
        let cshape = c.map(|c| c.shape().to_vec()).unwrap_or_default();
        let (bias, full_c) = match (&cv, cshape.as_slice()) {
            (None, _) => (Bias::None, None),
            (Some(v), [n2]) | (Some(v), [1, n2]) if *n2 == n => (Bias::Col(v), None),
            (Some(v), [m2, 1]) if *m2 == m => (Bias::Row(v), None),
            (Some(v), _) => {
                let t = Tensor::from_vec(cshape.clone(), v.clone())?;
                let full = accel_core::ops::eval_binary(
                    accel_core::ir::BinaryOp::Add,
                    &Tensor::from_vec(vec![m, n], vec![0.0f32; m * n])?,
                    &t,
                )
                .map_err(|e| Error::node(node, e.to_string()))?;
                (Bias::None, Some(full.into_vec::<f32>()?))
            }
        };
        // With a full C, the activation must wait until C is added.
        let act = if full_c.is_some() { None } else { g.activation };
        gemm(
            &pa,
            pb,
            out,
            n,
            Epilogue {
                bias,
                activation: act,
                residual: None,
            },
        );
        if let Some(fc) = full_c {
            out.iter_mut().zip(fc).for_each(|(o, c)| *o += c);
            if let Some(a) = g.activation {
                super::activation::apply_slice(a, out);
            }
        }
        Ok(())
    }
}

fn pack_gemm_b(node: &Node, g: &Gemm, b: &TensorView) -> Result<PackedB> {
    let bv: Vec<f32> = f32s(node, b)?.iter().map(|x| x * g.alpha).collect();
    let (r, c) = (b.shape()[0], b.shape()[1]);
    Ok(if g.trans_b {
        PackedB::pack(&bv, c, r, 1, c)
    } else {
        PackedB::pack(&bv, r, c, c, 1)
    })
}
