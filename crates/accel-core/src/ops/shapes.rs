//! Shape and dtype inference over symbolic dimensions.
//!
//! Dimensions that depend on values nobody knows before running (a non-constant Reshape
//! target, say) become fresh symbols named after the output; a graph specialised to concrete
//! input shapes (see `passes::specialize`) folds those away.

use super::layout::{Slices, reshape_shape, squeeze_shape, unsqueeze_shape};
use super::resize::resize_geometry;
use super::{flatten_axis, normalize_axis};
use crate::ir::{AutoPad, Dim, Node, Op, Window};
use crate::{DType, Error, Result, Tensor, shape_err};

/// Spatial geometry of a conv or pool on known input sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedWindow {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
    pub pads_end: Vec<usize>,
    pub output: Vec<usize>,
}

/// Span of a dilated kernel, `dil * (k - 1) + 1`; `None` for a zero kernel or on overflow.
fn kernel_span(k: usize, dil: usize) -> Option<usize> {
    dil.checked_mul(k.checked_sub(1)?)?.checked_add(1)
}

/// Output length of a window sliding over one axis (convolutions use `ceil = false`).
pub fn pool_output_size(
    input: usize,
    k: usize,
    stride: usize,
    dil: usize,
    pb: usize,
    pe: usize,
    ceil: bool,
) -> Option<usize> {
    let span = kernel_span(k, dil)?;
    if stride == 0 {
        return None;
    }
    let r = input.checked_add(pb)?.checked_add(pe)?.checked_sub(span)?;
    let mut out = if ceil {
        r.div_ceil(stride) + 1
    } else {
        r / stride + 1
    };
    // A last window that would start inside the end padding is dropped.
    if ceil && (out - 1) * stride >= input + pb {
        out -= 1;
    }
    Some(out)
}

/// Resolves pads (incl. auto_pad) and output sizes of a Conv or pool window.
pub fn resolve_window(
    w: &Window,
    input: &[usize],
    kernel: &[usize],
    ceil_mode: bool,
) -> Result<ResolvedWindow> {
    let n = input.len();
    let or1 = |v: &Vec<usize>| if v.is_empty() { vec![1; n] } else { v.clone() };
    let strides = or1(&w.strides);
    let dilations = or1(&w.dilations);
    if kernel.len() != n || strides.len() != n || dilations.len() != n {
        return Err(shape_err!(
            "window attributes (kernel {kernel:?}, strides {strides:?}, dilations {dilations:?}) do not match {n} spatial axes"
        ));
    }
    check_window_values(kernel, &strides, &dilations)?;
    let (mut pb, mut pe) = if w.pads.is_empty() {
        (vec![0; n], vec![0; n])
    } else if w.pads.len() == 2 * n {
        (w.pads[..n].to_vec(), w.pads[n..].to_vec())
    } else {
        return Err(shape_err!(
            "pads {:?} do not match {n} spatial axes",
            w.pads
        ));
    };
    match w.auto_pad {
        AutoPad::NotSet => {}
        AutoPad::Valid => {
            pb = vec![0; n];
            pe = vec![0; n];
        }
        AutoPad::SameUpper | AutoPad::SameLower => {
            for i in 0..n {
                let out = input[i].div_ceil(strides[i]);
                let span = kernel_span(kernel[i], dilations[i]).ok_or_else(overflow)?;
                // An empty axis stays empty (and is then rejected below): no padding.
                let total = if out == 0 {
                    0
                } else {
                    ((out - 1) * strides[i])
                        .checked_add(span)
                        .ok_or_else(overflow)?
                        .saturating_sub(input[i])
                };
                let small = total / 2;
                (pb[i], pe[i]) = if w.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
        }
    }
    let mut output = Vec::with_capacity(n);
    for i in 0..n {
        let o = pool_output_size(
            input[i],
            kernel[i],
            strides[i],
            dilations[i],
            pb[i],
            pe[i],
            ceil_mode,
        )
        .ok_or_else(|| {
            shape_err!(
                "window {kernel:?} does not fit input {input:?} with pads {:?}/{:?}",
                pb,
                pe
            )
        })?;
        output.push(o);
    }
    Ok(ResolvedWindow {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pads_begin: pb,
        pads_end: pe,
        output,
    })
}

/// Lifts 1-D window attributes to 2-D with a unit leading axis. The kernel and every given
/// attribute must have one entry per spatial axis of the input (pads two).
pub fn spatial_2d(
    node: &Node,
    kernel: &[usize],
    w: &Window,
    one_d: bool,
) -> Result<(Vec<usize>, Window)> {
    let n = if one_d { 1 } else { 2 };
    let fits = |v: &[usize], per_axis: usize| v.is_empty() || v.len() == per_axis * n;
    if kernel.len() != n
        || !fits(&w.kernel_shape, 1)
        || !fits(&w.strides, 1)
        || !fits(&w.dilations, 1)
        || !fits(&w.pads, 2)
    {
        return Err(Error::node(
            node,
            format!(
                "the input has {n} spatial axis/axes, but the kernel is {kernel:?} (kernel_shape {:?}, strides {:?}, dilations {:?}, pads {:?})",
                w.kernel_shape, w.strides, w.dilations, w.pads
            ),
        ));
    }
    if !one_d {
        return Ok((kernel.to_vec(), w.clone()));
    }
    let lift = |v: &Vec<usize>, fill: usize| {
        if v.is_empty() {
            vec![]
        } else {
            vec![fill, v[0]]
        }
    };
    let pads = if w.pads.len() == 2 {
        vec![0, w.pads[0], 0, w.pads[1]]
    } else {
        vec![]
    };
    Ok((
        vec![1, kernel[0]],
        Window {
            kernel_shape: lift(&w.kernel_shape, 1),
            strides: lift(&w.strides, 1),
            dilations: lift(&w.dilations, 1),
            pads,
            auto_pad: w.auto_pad,
        },
    ))
}

/// Kernel sizes, strides and dilations must be positive.
fn check_window_values(kernel: &[usize], strides: &[usize], dilations: &[usize]) -> Result<()> {
    if kernel.contains(&0) || strides.contains(&0) || dilations.contains(&0) {
        return Err(shape_err!(
            "kernel {kernel:?}, strides {strides:?} and dilations {dilations:?} must be positive"
        ));
    }
    Ok(())
}

fn overflow() -> Error {
    shape_err!("window arithmetic overflows: kernel, stride, dilation or pad values are absurd")
}

/// Pads and output sizes of a ConvTranspose on known input sizes.
pub fn resolve_conv_transpose(
    w: &Window,
    input: &[usize],
    kernel: &[usize],
    output_padding: &[usize],
    output_shape: Option<&[usize]>,
) -> Result<ResolvedWindow> {
    let n = input.len();
    let or1 = |v: &Vec<usize>| if v.is_empty() { vec![1; n] } else { v.clone() };
    let strides = or1(&w.strides);
    let dilations = or1(&w.dilations);
    let opad = if output_padding.is_empty() {
        vec![0; n]
    } else {
        output_padding.to_vec()
    };
    if kernel.len() != n || strides.len() != n || dilations.len() != n || opad.len() != n {
        return Err(shape_err!(
            "ConvTranspose attributes (kernel {kernel:?}, strides {strides:?}, dilations {dilations:?}, output_padding {opad:?}) do not match {n} spatial axes"
        ));
    }
    check_window_values(kernel, &strides, &dilations)?;
    if input.contains(&0) {
        return Err(shape_err!(
            "ConvTranspose input has an empty spatial axis: {input:?}"
        ));
    }
    let full = (0..n)
        .map(|i| {
            strides[i]
                .checked_mul(input[i] - 1)?
                .checked_add(opad[i])?
                .checked_add(kernel_span(kernel[i], dilations[i])?)
        })
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(overflow)?;
    let full = |i: usize| full[i];
    let mut pb = vec![0; n];
    let mut pe = vec![0; n];
    let target: Option<Vec<usize>> = match (output_shape, w.auto_pad) {
        (Some(s), _) => Some(s[s.len().saturating_sub(n)..].to_vec()),
        (None, AutoPad::SameUpper | AutoPad::SameLower) => Some(
            (0..n)
                .map(|i| input[i].checked_mul(strides[i]))
                .collect::<Option<_>>()
                .ok_or_else(overflow)?,
        ),
        _ => None,
    };
    match &target {
        Some(t) => {
            if t.len() != n {
                return Err(shape_err!(
                    "output_shape {t:?} does not match {n} spatial axes"
                ));
            }
            for i in 0..n {
                // A target beyond the full output is zero-extended at the end, as ONNX
                // Runtime does (and the ONNX conformance case test_convtranspose_output_shape).
                let total = full(i).saturating_sub(t[i]);
                let small = total / 2;
                (pb[i], pe[i]) = if w.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
        }
        None if !w.pads.is_empty() => {
            if w.pads.len() != 2 * n {
                return Err(shape_err!(
                    "pads {:?} do not match {n} spatial axes",
                    w.pads
                ));
            }
            pb = w.pads[..n].to_vec();
            pe = w.pads[n..].to_vec();
        }
        None => {}
    }
    let output = (0..n)
        .map(|i| {
            let padded = pb[i]
                .checked_add(pe[i])
                .and_then(|p| full(i).checked_sub(p));
            target
                .as_ref()
                .map_or(padded, |t| Some(t[i]))
                .filter(|&o| o > 0)
                .ok_or_else(|| shape_err!("pads exceed the ConvTranspose output"))
        })
        .collect::<Result<_>>()?;
    Ok(ResolvedWindow {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pads_begin: pb,
        pads_end: pe,
        output,
    })
}

type Shape = Vec<Dim>;

/// A value's dtype and, when known, its (possibly symbolic) shape.
pub type TypeInfo = (DType, Option<Vec<Dim>>);

struct Ctx<'a> {
    node: &'a Node,
    types: &'a [Option<TypeInfo>],
    consts: &'a [Option<&'a Tensor>],
}

impl Ctx<'_> {
    fn dtype(&self, i: usize) -> Result<DType> {
        self.types
            .get(i)
            .and_then(|t| t.as_ref())
            .map(|t| t.0)
            .ok_or_else(|| Error::node(self.node, format!("input {i} is required")))
    }
    fn shape(&self, i: usize) -> Option<&Shape> {
        self.types
            .get(i)
            .and_then(|t| t.as_ref())
            .and_then(|t| t.1.as_ref())
    }
    fn known(&self, i: usize) -> Option<Vec<usize>> {
        self.shape(i)?.iter().map(Dim::known).collect()
    }
    fn ints(&self, i: usize) -> Result<Option<Vec<i64>>> {
        self.consts
            .get(i)
            .copied()
            .flatten()
            .map(|t| t.to_i64_vec())
            .transpose()
    }
    fn fresh(&self, out: usize, rank: usize) -> Shape {
        let name = self
            .node
            .outputs
            .get(out)
            .map(String::as_str)
            .unwrap_or("?");
        (0..rank).map(|d| Dim::Sym(format!("{name}:{d}"))).collect()
    }
}

fn known_shape(v: &[usize]) -> Shape {
    v.iter().map(|&d| Dim::Known(d)).collect()
}

fn broadcast_dims(a: &Shape, b: &Shape) -> Result<Shape> {
    let rank = a.len().max(b.len());
    let one = Dim::Known(1);
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank {
                &a[i + a.len() - rank]
            } else {
                &one
            };
            let db = if i + b.len() >= rank {
                &b[i + b.len() - rank]
            } else {
                &one
            };
            Ok(match (da, db) {
                (x, y) if x == y => x.clone(),
                (Dim::Known(1), y) => y.clone(),
                (x, Dim::Known(1)) => x.clone(),
                (Dim::Known(x), Dim::Known(y)) => {
                    return Err(shape_err!("dims {x} and {y} do not broadcast"));
                }
                // A symbol against a known dim > 1 must equal it.
                (Dim::Sym(_), k @ Dim::Known(_)) | (k @ Dim::Known(_), Dim::Sym(_)) => k.clone(),
                (s @ Dim::Sym(_), Dim::Sym(_)) => s.clone(),
            })
        })
        .collect()
}

/// Infers output dtypes and shapes. `types[i]` is the dtype and (maybe unknown) shape of input
/// i, `consts[i]` its value when constant.
pub fn infer(
    node: &Node,
    types: &[Option<TypeInfo>],
    consts: &[Option<&Tensor>],
) -> Result<Vec<TypeInfo>> {
    let c = Ctx {
        node,
        types,
        consts,
    };
    infer_inner(&c).map_err(|e| match e {
        Error::Shape(m) | Error::Other(m) => Error::node(node, m),
        other => other,
    })
}

fn infer_inner(c: &Ctx) -> Result<Vec<(DType, Option<Shape>)>> {
    let x_shape = c.shape(0).cloned();
    let same = || Ok(vec![(c.dtype(0)?, x_shape.clone())]);
    match &c.node.op {
        Op::Unary(_)
        | Op::Clip
        | Op::LeakyRelu { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::Identity
        | Op::BatchNormalization { .. } => same(),
        Op::Dropout => {
            let mut v = same()?;
            if c.node.outputs.len() > 1 {
                v.push((DType::Bool, x_shape.clone()));
            }
            Ok(v)
        }
        Op::Binary(b) => {
            use crate::ir::BinaryOp::*;
            let dt = if matches!(b, Equal | Less | Greater) {
                DType::Bool
            } else {
                c.dtype(0)?
            };
            let shape = match (c.shape(0), c.shape(1)) {
                (Some(a), Some(b)) => Some(broadcast_dims(a, b)?),
                _ => None,
            };
            Ok(vec![(dt, shape)])
        }
        Op::Where => {
            let shape = match (c.shape(0), c.shape(1), c.shape(2)) {
                (Some(a), Some(b), Some(d)) => Some(broadcast_dims(&broadcast_dims(a, b)?, d)?),
                _ => None,
            };
            Ok(vec![(c.dtype(1)?, shape)])
        }
        Op::Cast { to } => Ok(vec![(*to, x_shape)]),
        Op::Conv(_) | Op::ConvTranspose(_) | Op::MaxPool(_) | Op::AveragePool(_) => conv_like(c),
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let shape = x_shape.map(|s| {
                s.iter()
                    .enumerate()
                    .map(|(i, d)| if i < 2 { d.clone() } else { Dim::Known(1) })
                    .collect()
            });
            Ok(vec![(c.dtype(0)?, shape)])
        }
        Op::MatMul { .. } => {
            let shape = match (c.shape(0), c.shape(1)) {
                (Some(a), Some(b)) => Some(matmul_shape(a, b)?),
                _ => None,
            };
            Ok(vec![(c.dtype(0)?, shape)])
        }
        Op::Gemm(g) => {
            let shape = match (c.shape(0), c.shape(1)) {
                (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => {
                    let m = if g.trans_a {
                        a[1].clone()
                    } else {
                        a[0].clone()
                    };
                    let n = if g.trans_b {
                        b[0].clone()
                    } else {
                        b[1].clone()
                    };
                    Some(vec![m, n])
                }
                (Some(_), Some(_)) => return Err(shape_err!("Gemm needs 2-D inputs")),
                _ => None,
            };
            Ok(vec![(c.dtype(0)?, shape)])
        }
        Op::Lstm(l) => {
            let dirs = Dim::Known(l.direction.num_directions());
            let h = Dim::Known(l.hidden_size);
            let dt = c.dtype(0)?;
            let Some(x) = c.shape(0) else {
                return Ok(vec![(dt, None); c.node.outputs.len()]);
            };
            if x.len() != 3 {
                return Err(shape_err!("LSTM input must be 3-D, got rank {}", x.len()));
            }
            if l.layout > 1 {
                return Err(shape_err!("LSTM layout must be 0 or 1, got {}", l.layout));
            }
            let (seq, batch) = if l.layout == 0 {
                (x[0].clone(), x[1].clone())
            } else {
                (x[1].clone(), x[0].clone())
            };
            let (y, state) = if l.layout == 0 {
                (
                    vec![seq, dirs.clone(), batch.clone(), h.clone()],
                    vec![dirs, batch, h],
                )
            } else {
                (
                    vec![batch.clone(), seq, dirs.clone(), h.clone()],
                    vec![batch, dirs, h],
                )
            };
            Ok(
                vec![(dt, Some(y)), (dt, Some(state.clone())), (dt, Some(state))]
                    .into_iter()
                    .take(c.node.outputs.len())
                    .collect(),
            )
        }
        Op::Reduce {
            keepdims,
            noop_with_empty_axes,
            ..
        } => {
            let dt = c.dtype(0)?;
            let Some(x) = c.shape(0) else {
                return Ok(vec![(dt, None)]);
            };
            let axes = if c.node.input(1).is_some() {
                match c.ints(1)? {
                    Some(a) => a,
                    None => return Ok(vec![(dt, None)]),
                }
            } else {
                vec![]
            };
            if axes.is_empty() && *noop_with_empty_axes {
                return Ok(vec![(dt, Some(x.clone()))]);
            }
            let mut red = vec![axes.is_empty(); x.len()];
            for a in axes {
                red[normalize_axis(a, x.len())?] = true;
            }
            let shape = x
                .iter()
                .zip(&red)
                .filter_map(|(d, &r)| {
                    if !r {
                        Some(d.clone())
                    } else if *keepdims {
                        Some(Dim::Known(1))
                    } else {
                        None
                    }
                })
                .collect();
            Ok(vec![(dt, Some(shape))])
        }
        Op::Concat { axis } => {
            let dt = c.dtype(0)?;
            let shapes: Option<Vec<&Shape>> =
                (0..c.node.inputs.len()).map(|i| c.shape(i)).collect();
            let Some(shapes) = shapes else {
                return Ok(vec![(dt, None)]);
            };
            let rank = shapes[0].len();
            let a = normalize_axis(*axis, rank)?;
            let mut out = shapes[0].clone();
            let known: Option<Vec<usize>> = shapes
                .iter()
                .map(|s| s.get(a).and_then(Dim::known))
                .collect();
            let total = match known {
                Some(k) => Some(
                    k.iter()
                        .try_fold(0usize, |t, &d| t.checked_add(d))
                        .ok_or_else(|| shape_err!("Concat of {k:?} along axis {a} overflows"))?,
                ),
                None => None,
            };
            out[a] = match total {
                Some(t) => Dim::Known(t),
                None => c.fresh(0, rank)[a].clone(),
            };
            Ok(vec![(dt, Some(out))])
        }
        Op::Split { axis, num_outputs } => {
            let dt = c.dtype(0)?;
            let Some(x) = c.shape(0) else {
                return Ok(vec![(dt, None); *num_outputs]);
            };
            let a = normalize_axis(*axis, x.len())?;
            let sizes: Option<Vec<usize>> = match c.ints(1)? {
                Some(s) => {
                    if s.len() != *num_outputs {
                        return Err(shape_err!(
                            "Split sizes {s:?} do not match {num_outputs} outputs"
                        ));
                    }
                    let s = s
                        .iter()
                        .map(|&v| usize::try_from(v))
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|_| shape_err!("Split sizes {s:?} must not be negative"))?;
                    if let Some(len) = x[a].known()
                        && s.iter().try_fold(0usize, |t, &v| t.checked_add(v)) != Some(len)
                    {
                        return Err(shape_err!("Split sizes {s:?} do not add up to {len}"));
                    }
                    Some(s)
                }
                None if c.node.input(1).is_none() => x[a].known().map(|len| {
                    let chunk = len.div_ceil((*num_outputs).max(1));
                    (0..*num_outputs)
                        .map(|i| chunk.min(len.saturating_sub(i * chunk)))
                        .collect()
                }),
                None => None,
            };
            Ok((0..*num_outputs)
                .map(|i| {
                    let mut s = x.clone();
                    s[a] = sizes
                        .as_ref()
                        .map_or_else(|| c.fresh(i, x.len())[a].clone(), |v| Dim::Known(v[i]));
                    (dt, Some(s))
                })
                .collect())
        }
        Op::Reshape { allowzero } => {
            let dt = c.dtype(0)?;
            let Some(target) = c.ints(1)? else {
                let rank = c.shape(1).and_then(|s| s.first()).and_then(Dim::known);
                return Ok(vec![(dt, rank.map(|r| c.fresh(0, r)))]);
            };
            Ok(vec![(
                dt,
                Some(reshape_dims(c, x_shape.as_ref(), &target, *allowzero)?),
            )])
        }
        Op::Transpose { perm } => {
            let dt = c.dtype(0)?;
            let shape = x_shape.map(|s| {
                let perm = perm.clone().unwrap_or_else(|| (0..s.len()).rev().collect());
                perm.iter()
                    .map(|&p| {
                        s.get(p)
                            .cloned()
                            .ok_or_else(|| shape_err!("perm {perm:?} exceeds rank {}", s.len()))
                    })
                    .collect::<Result<Shape>>()
            });
            Ok(vec![(dt, shape.transpose()?)])
        }
        Op::Squeeze | Op::Unsqueeze => {
            let dt = c.dtype(0)?;
            let Some(x) = c.shape(0) else {
                return Ok(vec![(dt, None)]);
            };
            let axes = if c.node.input(1).is_some() {
                c.ints(1)?
            } else {
                None
            };
            let squeeze = matches!(c.node.op, Op::Squeeze);
            if c.node.input(1).is_some() && axes.is_none() {
                return Ok(vec![(dt, None)]);
            }
            let shape = if squeeze {
                match &axes {
                    Some(a) => {
                        let mut drop = vec![false; x.len()];
                        for &ax in a {
                            drop[normalize_axis(ax, x.len())?] = true;
                        }
                        x.iter()
                            .zip(drop)
                            .filter(|(_, d)| !d)
                            .map(|(s, _)| s.clone())
                            .collect()
                    }
                    None => match c.known(0) {
                        Some(k) => known_shape(&squeeze_shape(&k, None)?),
                        None => return Ok(vec![(dt, None)]),
                    },
                }
            } else {
                let axes = axes.unwrap_or_default();
                let ones = unsqueeze_shape(&vec![2; x.len()], &axes)?;
                let mut src = x.iter();
                ones.iter()
                    .map(|&d| {
                        if d == 1 {
                            Dim::Known(1)
                        } else {
                            src.next().cloned().unwrap_or(Dim::Known(1))
                        }
                    })
                    .collect()
            };
            Ok(vec![(dt, Some(shape))])
        }
        Op::Flatten { axis } => {
            let dt = c.dtype(0)?;
            let Some(x) = c.shape(0) else {
                return Ok(vec![(dt, Some(c.fresh(0, 2)))]);
            };
            let a = flatten_axis(*axis, x.len())?;
            let prod = |s: &[Dim], i: usize| -> Result<Dim> {
                let known: Option<Vec<usize>> = s.iter().map(Dim::known).collect();
                Ok(match known {
                    Some(k) => Dim::Known(
                        k.iter()
                            .try_fold(1usize, |a, &d| a.checked_mul(d))
                            .ok_or_else(|| shape_err!("Flatten of {k:?} overflows"))?,
                    ),
                    None if s.len() == 1 => s[0].clone(),
                    None => c.fresh(0, 2)[i].clone(),
                })
            };
            Ok(vec![(dt, Some(vec![prod(&x[..a], 0)?, prod(&x[a..], 1)?]))])
        }
        Op::Shape { start, end } => {
            c.dtype(0)?;
            let len = c.shape(0).map(|s| {
                let r = s.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r);
                (clamp(end.unwrap_or(r)) - clamp(*start)).max(0) as usize
            });
            Ok(vec![(
                DType::I64,
                Some(vec![
                    len.map_or_else(|| c.fresh(0, 1)[0].clone(), Dim::Known),
                ]),
            )])
        }
        Op::Gather { axis } => {
            let dt = c.dtype(0)?;
            let (Some(x), Some(i)) = (c.shape(0), c.shape(1)) else {
                return Ok(vec![(dt, None)]);
            };
            let a = normalize_axis(*axis, x.len())?;
            let mut s = x[..a].to_vec();
            s.extend(i.iter().cloned());
            s.extend(x[a + 1..].iter().cloned());
            Ok(vec![(dt, Some(s))])
        }
        Op::Slice => {
            let dt = c.dtype(0)?;
            let Some(x) = c.shape(0) else {
                return Ok(vec![(dt, None)]);
            };
            let (Some(starts), Some(ends)) = (c.ints(1)?, c.ints(2)?) else {
                return Ok(vec![(dt, Some(c.fresh(0, x.len())))]);
            };
            let axes = if c.node.input(3).is_some() {
                c.ints(3)?
            } else {
                None
            };
            let steps = if c.node.input(4).is_some() {
                c.ints(4)?
            } else {
                None
            };
            if (c.node.input(3).is_some() && axes.is_none())
                || (c.node.input(4).is_some() && steps.is_none())
            {
                return Ok(vec![(dt, Some(c.fresh(0, x.len())))]);
            }
            // Slice the known dims with a stand-in size for symbols, then restore untouched symbols.
            let stand_in: Vec<usize> = x
                .iter()
                .map(|d| d.known().unwrap_or(usize::MAX / 4))
                .collect();
            let s = Slices::new(&stand_in, &starts, &ends, axes.as_deref(), steps.as_deref())?;
            let touched: Vec<usize> = match &axes {
                Some(a) => a
                    .iter()
                    .map(|&ax| normalize_axis(ax, x.len()))
                    .collect::<Result<_>>()?,
                None => (0..starts.len()).collect(),
            };
            let fresh = c.fresh(0, x.len());
            let shape = (0..x.len())
                .map(|i| match (&x[i], touched.contains(&i)) {
                    (d, false) => d.clone(),
                    (Dim::Known(_), true) => Dim::Known(s.out_shape[i]),
                    (Dim::Sym(_), true) => fresh[i].clone(),
                })
                .collect();
            Ok(vec![(dt, Some(shape))])
        }
        Op::Expand => {
            let dt = c.dtype(0)?;
            let (Some(x), Some(t)) = (c.shape(0), c.ints(1)?) else {
                let rank = c.shape(1).and_then(|s| s.first()).and_then(Dim::known);
                return Ok(vec![(
                    dt,
                    rank.map(|r| c.fresh(0, r.max(c.shape(0).map_or(0, |s| s.len())))),
                )]);
            };
            let t: Shape = t
                .iter()
                .map(|&d| {
                    usize::try_from(d)
                        .map(Dim::Known)
                        .map_err(|_| shape_err!("Expand to negative dimension {d}"))
                })
                .collect::<Result<_>>()?;
            Ok(vec![(dt, Some(broadcast_dims(x, &t)?))])
        }
        Op::Tile => {
            let dt = c.dtype(0)?;
            let (Some(x), Some(r)) = (c.shape(0), c.ints(1)?) else {
                return Ok(vec![(dt, c.shape(0).map(|s| c.fresh(0, s.len())))]);
            };
            if r.len() != x.len() || r.iter().any(|&k| k < 0) {
                return Err(shape_err!("Tile repeats {r:?} do not fit rank {}", x.len()));
            }
            let fresh = c.fresh(0, x.len());
            let shape = x
                .iter()
                .zip(&r)
                .enumerate()
                .map(|(i, (d, &k))| {
                    Ok(match d {
                        Dim::Known(n) => Dim::Known(
                            n.checked_mul(k as usize)
                                .ok_or_else(|| shape_err!("Tile repeats {r:?} overflow"))?,
                        ),
                        s if k == 1 => s.clone(),
                        _ => fresh[i].clone(),
                    })
                })
                .collect::<Result<_>>()?;
            Ok(vec![(dt, Some(shape))])
        }
        Op::Pad { .. } => {
            let dt = c.dtype(0)?;
            let Some(x) = c.shape(0) else {
                return Ok(vec![(dt, None)]);
            };
            let Some(pads) = c.ints(1)? else {
                return Ok(vec![(dt, Some(c.fresh(0, x.len())))]);
            };
            let axes: Vec<usize> = match if c.node.input(3).is_some() {
                c.ints(3)?
            } else {
                None
            } {
                Some(a) => a
                    .iter()
                    .map(|&ax| normalize_axis(ax, x.len()))
                    .collect::<Result<_>>()?,
                None => (0..x.len()).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return Err(shape_err!(
                    "Pad expects {} pad values, got {}",
                    2 * axes.len(),
                    pads.len()
                ));
            }
            let mut shape = x.clone();
            let fresh = c.fresh(0, x.len());
            for (k, &a) in axes.iter().enumerate() {
                let add = pads[k]
                    .checked_add(pads[k + axes.len()])
                    .ok_or_else(|| shape_err!("Pad {pads:?} overflows"))?;
                shape[a] = match &x[a] {
                    Dim::Known(d) => Dim::Known(
                        i64::try_from(*d)
                            .ok()
                            .and_then(|d| d.checked_add(add))
                            .and_then(|v| usize::try_from(v).ok())
                            .ok_or_else(|| {
                                shape_err!("Pad {pads:?} makes a negative or absurd dimension")
                            })?,
                    ),
                    s if add == 0 => s.clone(),
                    _ => fresh[a].clone(),
                };
            }
            Ok(vec![(dt, Some(shape))])
        }
        Op::Resize(_) => {
            let dt = c.dtype(0)?;
            let Some(x) = c.shape(0) else {
                return Ok(vec![(dt, None)]);
            };
            let scales = c.consts.get(2).copied().flatten();
            let sizes = c.consts.get(3).copied().flatten();
            let fresh = c.fresh(0, x.len());
            let stand_in: Vec<usize> = x.iter().map(|d| d.known().unwrap_or(1)).collect();
            let shape = match resize_geometry(&stand_in, scales, sizes) {
                Ok((out, sc)) => x
                    .iter()
                    .enumerate()
                    .map(|(i, d)| match d {
                        Dim::Known(_) => Dim::Known(out[i]),
                        s if sc[i] == 1.0 && sizes.is_none_or(|t| t.is_empty()) => s.clone(),
                        _ => fresh[i].clone(),
                    })
                    .collect(),
                Err(_) => fresh,
            };
            Ok(vec![(dt, Some(shape))])
        }
        Op::Range => {
            let dt = c.dtype(0)?;
            let len = match (
                c.consts.first().copied().flatten(),
                c.consts.get(1).copied().flatten(),
                c.consts.get(2).copied().flatten(),
            ) {
                (Some(s), Some(l), Some(d)) => {
                    let scalar = |t: &Tensor| -> Result<f64> {
                        let v = t.to_f32_vec()?;
                        v.first()
                            .map(|&x| x as f64)
                            .ok_or_else(|| shape_err!("Range expects scalars"))
                    };
                    let (s, l, d) = (scalar(s)?, scalar(l)?, scalar(d)?);
                    if ![s, l, d].iter().all(|v| v.is_finite()) {
                        return Err(shape_err!("Range({s}, {l}, {d}) needs finite values"));
                    }
                    if d == 0.0 {
                        return Err(shape_err!("Range delta must not be 0"));
                    }
                    let n = ((l - s) / d).ceil().max(0.0);
                    if !n.is_finite() || n > crate::MAX_TENSOR_ELEMENTS as f64 {
                        return Err(shape_err!("Range({s}, {l}, {d}) would have {n} elements"));
                    }
                    Dim::Known(n as usize)
                }
                _ => c.fresh(0, 1)[0].clone(),
            };
            Ok(vec![(dt, Some(vec![len]))])
        }
        Op::ConstantOfShape { value } => {
            c.dtype(0)?;
            let shape = match c.ints(0)? {
                Some(s) => Some(
                    s.iter()
                        .map(|&d| {
                            usize::try_from(d).map(Dim::Known).map_err(|_| {
                                shape_err!("ConstantOfShape with negative dimension {d}")
                            })
                        })
                        .collect::<Result<_>>()?,
                ),
                None => c
                    .shape(0)
                    .and_then(|s| s.first())
                    .and_then(Dim::known)
                    .map(|r| c.fresh(0, r)),
            };
            Ok(vec![(value.dtype(), shape)])
        }
    }
}

fn conv_like(c: &Ctx) -> Result<Vec<(DType, Option<Shape>)>> {
    let dt = c.dtype(0)?;
    let Some(x) = c.shape(0) else {
        return Ok(vec![(dt, None)]);
    };
    if x.len() < 3 {
        return Err(shape_err!(
            "{} needs [N, C, spatial...], got rank {}",
            c.node.op.name(),
            x.len()
        ));
    }
    let spatial: Option<Vec<usize>> = x[2..].iter().map(Dim::known).collect();
    let w = c
        .shape(1)
        .and_then(|s| s.iter().map(Dim::known).collect::<Option<Vec<_>>>());
    if let (Op::Conv(_) | Op::ConvTranspose(_), Some(ws)) = (&c.node.op, &w) {
        if ws.len() != x.len() {
            return Err(shape_err!(
                "weight shape {ws:?} does not fit an input of rank {} (weights are [out, in/group, kernel...] with one kernel axis per spatial axis)",
                x.len()
            ));
        }
        let attr_kernel = match &c.node.op {
            Op::Conv(cv) => &cv.window.kernel_shape,
            Op::ConvTranspose(ct) => &ct.window.kernel_shape,
            _ => unreachable!("matched above"),
        };
        if !attr_kernel.is_empty() && attr_kernel[..] != ws[2..] {
            return Err(shape_err!(
                "kernel_shape {attr_kernel:?} does not match the weights' kernel {:?}",
                &ws[2..]
            ));
        }
    }
    let out_channels = match &c.node.op {
        Op::Conv(_) => w.as_ref().map(|w| Dim::Known(w[0])),
        Op::ConvTranspose(ct) => match &w {
            Some(w) => Some(Dim::Known(w[1].checked_mul(ct.group).ok_or_else(|| {
                shape_err!("group {} is absurd for weights {w:?}", ct.group)
            })?)),
            None => None,
        },
        _ => Some(x[1].clone()),
    };
    let kernel: Option<Vec<usize>> = match &c.node.op {
        Op::Conv(cv) if !cv.window.kernel_shape.is_empty() => Some(cv.window.kernel_shape.clone()),
        Op::ConvTranspose(ct) if !ct.window.kernel_shape.is_empty() => {
            Some(ct.window.kernel_shape.clone())
        }
        Op::MaxPool(p) | Op::AveragePool(p) => Some(p.window.kernel_shape.clone()),
        _ => w.as_ref().map(|w| w[2..].to_vec()),
    };
    let (Some(spatial), Some(kernel), Some(oc)) = (spatial, kernel, out_channels) else {
        return Ok(vec![(dt, Some(c.fresh(0, x.len())))]);
    };
    let out = match &c.node.op {
        Op::Conv(cv) => resolve_window(&cv.window, &spatial, &kernel, false)?.output,
        Op::ConvTranspose(ct) => {
            resolve_conv_transpose(
                &ct.window,
                &spatial,
                &kernel,
                &ct.output_padding,
                ct.output_shape.as_deref(),
            )?
            .output
        }
        Op::MaxPool(p) | Op::AveragePool(p) => {
            resolve_window(&p.window, &spatial, &kernel, p.ceil_mode)?.output
        }
        _ => unreachable!("conv_like is only called for convs and pools"),
    };
    let mut shape = vec![x[0].clone(), oc];
    shape.extend(out.into_iter().map(Dim::Known));
    Ok(vec![(dt, Some(shape))])
}

fn matmul_shape(a: &Shape, b: &Shape) -> Result<Shape> {
    if a.is_empty() || b.is_empty() {
        return Err(shape_err!("MatMul does not take scalars"));
    }
    let a2: Shape = if a.len() == 1 {
        vec![Dim::Known(1), a[0].clone()]
    } else {
        a.clone()
    };
    let b2: Shape = if b.len() == 1 {
        vec![b[0].clone(), Dim::Known(1)]
    } else {
        b.clone()
    };
    let (ka, kb) = (&a2[a2.len() - 1], &b2[b2.len() - 2]);
    if let (Dim::Known(x), Dim::Known(y)) = (ka, kb)
        && x != y
    {
        return Err(shape_err!("MatMul inner dimensions differ: {x} vs {y}"));
    }
    let batch = broadcast_dims(&a2[..a2.len() - 2].to_vec(), &b2[..b2.len() - 2].to_vec())?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1].clone());
    }
    Ok(out)
}

/// Reshape over symbolic dims: 0 copies, -1 absorbs what is left, including a lone symbol.
fn reshape_dims(c: &Ctx, x: Option<&Shape>, target: &[i64], allowzero: bool) -> Result<Shape> {
    let Some(x) = x else {
        return Ok(c.fresh(0, target.len()));
    };
    if let Some(k) = c.known(0) {
        return Ok(known_shape(&reshape_shape(&k, target, allowzero)?));
    }
    let mut out: Shape = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 => {
                infer = Some(i);
                out.push(Dim::Known(1));
            }
            0 if !allowzero => out.push(
                x.get(i)
                    .cloned()
                    .ok_or_else(|| shape_err!("Reshape 0 at axis {i} has no input dim"))?,
            ),
            d => out.push(Dim::Known(
                usize::try_from(d).map_err(|_| shape_err!("invalid Reshape target {target:?}"))?,
            )),
        }
    }
    if let Some(i) = infer {
        // Cancel symbols and known factors shared by input and output; what remains is -1.
        let mut in_syms: Vec<&Dim> = x.iter().filter(|d| d.known().is_none()).collect();
        let mut in_known: usize = x
            .iter()
            .filter_map(Dim::known)
            .try_fold(1usize, |a, d| a.checked_mul(d))
            .ok_or_else(|| shape_err!("Reshape input {x:?} overflows"))?;
        let mut ok = true;
        for d in &out {
            match d {
                Dim::Known(n) => {
                    if *n == 0 || !in_known.is_multiple_of(*n) {
                        ok = false;
                    } else {
                        in_known /= n;
                    }
                }
                s => match in_syms.iter().position(|x| *x == s) {
                    Some(p) => {
                        in_syms.remove(p);
                    }
                    None => ok = false,
                },
            }
        }
        out[i] = match (ok, in_syms.as_slice(), in_known) {
            (true, [], k) => Dim::Known(k),
            (true, [s], 1) => (*s).clone(),
            _ => c.fresh(0, target.len())[i].clone(),
        };
    }
    Ok(out)
}
