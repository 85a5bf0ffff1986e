//! CPU kernels, one module per operator family. Each compiled kernel owns its packed weights.

pub mod activation;
pub mod conv;
mod conv_direct;
pub mod conv_transpose;
mod conv_transpose_winograd;
mod depthwise;
pub mod gemm;
mod interleave;
pub mod lstm;
pub mod matmul;
pub mod pool;
mod winograd;

use accel_core::ir::Node;
use accel_core::{Error, Result, Tensor, TensorView, shape_err};

/// A kernel's output pointer shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub *mut f32);
// SAFETY: every user hands each task a region of the buffer no other task writes.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// An f32 [N, C, H, W] input, or [N, C, L] seen as H = 1.
pub(crate) struct Images<'a> {
    pub data: &'a [f32],
    pub n: usize,
    pub c: usize,
    pub hw: [usize; 2],
}

pub(crate) fn float_input<'a>(node: &Node, x: &TensorView<'a>) -> Result<Images<'a>> {
    let data = x
        .as_slice::<f32>()
        .map_err(|e| Error::node(node, e.to_string()))?;
    let (n, c, hw, _) = image_dims(node, x.shape())?;
    Ok(Images { data, n, c, hw })
}

/// (N, C, [H, W], one_d) of an [N, C, H, W] or [N, C, L] shape.
pub(crate) fn image_dims(node: &Node, s: &[usize]) -> Result<(usize, usize, [usize; 2], bool)> {
    match s.len() {
        3 => Ok((s[0], s[1], [1, s[2]], true)),
        4 => Ok((s[0], s[1], [s[2], s[3]], false)),
        _ => Err(Error::node(
            node,
            shape_err!("expected an [N, C, H, W] or [N, C, L] input, got {s:?}").to_string(),
        )),
    }
}

/// A planned output buffer must hold exactly the output.
pub(crate) fn check_out_len(node: &Node, shape: &[usize], out: &[f32]) -> Result<()> {
    let n = accel_core::checked_numel(shape).map_err(|e| Error::node(node, e.to_string()))?;
    if out.len() != n {
        return Err(Error::node(
            node,
            format!(
                "output buffer holds {} values, the output {shape:?} has {n}",
                out.len()
            ),
        ));
    }
    Ok(())
}

/// The output shape [N, C, OH, OW], or [N, C, OW] for a 1-D input.
pub(crate) fn image_shape(n: usize, c: usize, [oh, ow]: [usize; 2], one_d: bool) -> Vec<usize> {
    if one_d {
        vec![n, c, ow]
    } else {
        vec![n, c, oh, ow]
    }
}

/// A new output of `shape` written by `fill` (a kernel's `run_into`).
pub(crate) fn new_output(
    node: &Node,
    shape: Vec<usize>,
    fill: impl FnOnce(&mut [f32]) -> Result<()>,
) -> Result<Tensor> {
    let mut out = zeroed_output(node, &shape)?;
    fill(&mut out)?;
    Tensor::from_vec(shape, out)
}

/// A zeroed f32 output buffer of `shape`, refusing absurd sizes.
pub(crate) fn zeroed_output(node: &Node, shape: &[usize]) -> Result<Vec<f32>> {
    let n = accel_core::checked_numel(shape).map_err(|e| Error::node(node, e.to_string()))?;
    Ok(vec![0.0f32; n])
}
