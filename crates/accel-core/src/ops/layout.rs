//! Layout and shape operators: pure data movement, written once for every element type.

use super::{flatten_axis, input, normalize_axis, opt_input};
use crate::ir::{Node, Op, PadMode};
use crate::{
    DType, Element, Error, Result, Tensor, TensorData, checked_numel, dispatch_data, shape_err,
};
use half::f16;

pub(super) fn eval(node: &Node, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = || input(node, inputs, 0);
    match &node.op {
        Op::Identity => Ok(x()?.clone()),
        Op::Concat { axis } => {
            let parts: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
            concat(&parts, *axis)
        }
        Op::Reshape { allowzero } => {
            let shape = reshape_shape(
                x()?.shape(),
                &input(node, inputs, 1)?.to_i64_vec()?,
                *allowzero,
            )?;
            x()?.clone().reshape(shape)
        }
        Op::Transpose { perm } => {
            let x = x()?;
            let perm = perm
                .clone()
                .unwrap_or_else(|| (0..x.rank()).rev().collect());
            transpose(x, &perm)
        }
        Op::Squeeze => {
            let x = x()?;
            let axes = opt_input(inputs, 1).map(|t| t.to_i64_vec()).transpose()?;
            let shape = squeeze_shape(x.shape(), axes.as_deref())?;
            x.clone().reshape(shape)
        }
        Op::Unsqueeze => {
            let x = x()?;
            let shape = unsqueeze_shape(x.shape(), &input(node, inputs, 1)?.to_i64_vec()?)?;
            x.clone().reshape(shape)
        }
        Op::Flatten { axis } => {
            let x = x()?;
            let a = flatten_axis(*axis, x.rank())?;
            let rows = x.shape()[..a].iter().product();
            let cols = x.shape()[a..].iter().product();
            x.clone().reshape(vec![rows, cols])
        }
        Op::Shape { start, end } => shape_of(x()?.shape(), *start, *end),
        Op::Gather { axis } => gather(x()?, input(node, inputs, 1)?, *axis),
        Op::Slice => {
            let x = x()?;
            let s = Slices::new(
                x.shape(),
                &input(node, inputs, 1)?.to_i64_vec()?,
                &input(node, inputs, 2)?.to_i64_vec()?,
                opt_input(inputs, 3)
                    .map(|t| t.to_i64_vec())
                    .transpose()?
                    .as_deref(),
                opt_input(inputs, 4)
                    .map(|t| t.to_i64_vec())
                    .transpose()?
                    .as_deref(),
            )?;
            s.apply(x)
        }
        Op::Expand => {
            let x = x()?;
            let target: Vec<usize> = input(node, inputs, 1)?
                .to_i64_vec()?
                .iter()
                .map(|&d| {
                    usize::try_from(d).map_err(|_| shape_err!("Expand to negative dimension {d}"))
                })
                .collect::<Result<_>>()?;
            let shape = super::broadcast_shapes(x.shape(), &target)?;
            checked_numel(&shape)?;
            broadcast_to(x, &shape)
        }
        Op::Tile => {
            let x = x()?;
            let reps = input(node, inputs, 1)?.to_i64_vec()?;
            tile(x, &reps)
        }
        Op::Pad { mode } => {
            let x = x()?;
            let pads = input(node, inputs, 1)?.to_i64_vec()?;
            let axes = opt_input(inputs, 3).map(|t| t.to_i64_vec()).transpose()?;
            pad(x, &pads, opt_input(inputs, 2), axes.as_deref(), *mode)
        }
        Op::Range => range(x()?, input(node, inputs, 1)?, input(node, inputs, 2)?),
        Op::ConstantOfShape { value } => {
            let shape: Vec<usize> = x()?
                .to_i64_vec()?
                .iter()
                .map(|&d| {
                    usize::try_from(d)
                        .map_err(|_| shape_err!("ConstantOfShape with negative dimension {d}"))
                })
                .collect::<Result<_>>()?;
            let n = checked_numel(&shape)?;
            let data = dispatch_data!(value.data(), T, v => {
                let first: T = v.first().copied().ok_or_else(|| shape_err!("ConstantOfShape value is empty"))?;
                Element::wrap(vec![first; n])
            });
            Tensor::new(shape, data)
        }
        Op::Cast { to } => cast(x()?, *to),
        op => Err(Error::Other(format!("{} is not a layout op", op.name()))),
    }
}

/// The Shape operator: dims `start..end` of `shape` (negative values count from the end).
pub(crate) fn shape_of(shape: &[usize], start: i64, end: Option<i64>) -> Result<Tensor> {
    let r = shape.len() as i64;
    let clamp = |v: i64| (if v < 0 { v.saturating_add(r) } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    let dims: Vec<i64> = shape[s..e.max(s)].iter().map(|&d| d as i64).collect();
    Tensor::from_vec(vec![dims.len()], dims)
}

/// Row-major strides of a shape.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Builds an output of `out_shape` whose element at multi-index `i` is
/// `src[base + sum(i[d] * src_strides[d])]`: transpose, slice and broadcast in one routine.
fn gather_strided<T: Copy + Default>(
    src: &[T],
    out_shape: &[usize],
    src_strides: &[isize],
    base: isize,
) -> Vec<T> {
    let mut out = vec![T::default(); out_shape.iter().product()];
    gather_strided_into(src, out_shape, src_strides, base, &mut out);
    out
}

/// [`gather_strided`] into `out`, which holds exactly `out_shape`'s element count.
pub fn gather_strided_into<T: Copy>(
    src: &[T],
    out_shape: &[usize],
    src_strides: &[isize],
    base: isize,
    out: &mut [T],
) {
    if out.is_empty() {
        return;
    }
    let rank = out_shape.len();
    if rank == 0 {
        out[0] = src[base as usize];
        return;
    }
    let inner = out_shape[rank - 1];
    let is = src_strides[rank - 1];
    let mut idx = vec![0usize; rank];
    let mut off = base;
    for row in out.chunks_exact_mut(inner) {
        if is == 1 {
            row.copy_from_slice(&src[off as usize..off as usize + inner]);
        } else {
            for (k, o) in row.iter_mut().enumerate() {
                *o = src[(off + k as isize * is) as usize];
            }
        }
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            off += src_strides[d];
            if idx[d] < out_shape[d] {
                break;
            }
            off -= src_strides[d] * out_shape[d] as isize;
            idx[d] = 0;
        }
    }
}

/// The NHWC -> NCHW transpose of images with 2 to 4 channels (an RGB model input), if
/// `perm` on `shape` is one: out[b, c, p] = x[b, p, c]. The strided gather reads such an
/// input one value per channel stride (41 us for a 128x128 RGB image on a Zen 2, one
/// thread); this reads each pixel's channels together (26 us). Returns false for any other
/// transpose.
pub fn channels_first_into<T: Copy>(
    x: &[T],
    shape: &[usize],
    perm: &[usize],
    out: &mut [T],
) -> bool {
    let r = shape.len();
    let last_to_second = r >= 3
        && perm.len() == r
        && perm[0] == 0
        && perm[1] == r - 1
        && perm[2..].iter().copied().eq(1..r - 1);
    let c = shape.last().copied().unwrap_or(0);
    if !last_to_second || !(2..=4).contains(&c) || x.len() != out.len() {
        return false;
    }
    let pixels: usize = shape[1..r - 1].iter().product();
    if pixels == 0 {
        return true;
    }
    for (src, dst) in x
        .chunks_exact(pixels * c)
        .zip(out.chunks_exact_mut(pixels * c))
    {
        match c {
            2 => {
                let (p0, p1) = dst.split_at_mut(pixels);
                for ((px, a), b) in src.chunks_exact(2).zip(p0).zip(p1) {
                    (*a, *b) = (px[0], px[1]);
                }
            }
            3 => {
                let (p0, rest) = dst.split_at_mut(pixels);
                let (p1, p2) = rest.split_at_mut(pixels);
                for (((px, a), b), d) in src.chunks_exact(3).zip(p0).zip(p1).zip(p2) {
                    (*a, *b, *d) = (px[0], px[1], px[2]);
                }
            }
            _ => {
                let (p01, p23) = dst.split_at_mut(2 * pixels);
                let (p0, p1) = p01.split_at_mut(pixels);
                let (p2, p3) = p23.split_at_mut(pixels);
                let planes = p0.iter_mut().zip(p1).zip(p2.iter_mut().zip(p3));
                for (px, ((a, b), (d, e))) in src.chunks_exact(4).zip(planes) {
                    (*a, *b, *d, *e) = (px[0], px[1], px[2], px[3]);
                }
            }
        }
    }
    true
}

/// Source strides and output shape of a transpose by `perm` (checked to be a permutation).
pub fn transpose_strides(shape: &[usize], perm: &[usize]) -> Result<(Vec<usize>, Vec<isize>)> {
    let rank = shape.len();
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(shape_err!(
            "perm {perm:?} is not a permutation of {rank} axes"
        ));
    }
    let s = strides(shape);
    Ok((
        perm.iter().map(|&p| shape[p]).collect(),
        perm.iter().map(|&p| s[p] as isize).collect(),
    ))
}

/// Source strides of `shape` broadcast to `out` (0 along broadcast axes).
pub fn broadcast_src_strides(shape: &[usize], out: &[usize]) -> Vec<isize> {
    let rank = out.len();
    let s = strides(shape);
    let mut src_strides = vec![0isize; rank];
    for (i, (&d, &st)) in shape.iter().zip(&s).enumerate() {
        src_strides[i + rank - shape.len()] = if d == 1 { 0 } else { st as isize };
    }
    src_strides
}

pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let (out_shape, src_strides) = transpose_strides(x.shape(), perm)?;
    let data = dispatch_data!(x.data(), _T, v => Element::wrap(gather_strided(v, &out_shape, &src_strides, 0)));
    Tensor::new(out_shape, data)
}

fn broadcast_to(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let src_strides = broadcast_src_strides(x.shape(), shape);
    let data =
        dispatch_data!(x.data(), _T, v => Element::wrap(gather_strided(v, shape, &src_strides, 0)));
    Tensor::new(shape.to_vec(), data)
}

pub fn concat(parts: &[&Tensor], axis: i64) -> Result<Tensor> {
    let first = parts
        .first()
        .ok_or_else(|| shape_err!("Concat needs at least one input"))?;
    let rank = first.rank();
    let axis = normalize_axis(axis, rank)?;
    let mut out_shape = first.shape().to_vec();
    out_shape[axis] = 0;
    for p in parts {
        if p.rank() != rank
            || p.dtype() != first.dtype()
            || p.shape()
                .iter()
                .enumerate()
                .any(|(i, &d)| i != axis && d != first.shape()[i])
        {
            return Err(shape_err!(
                "Concat inputs must agree except on axis {axis}: {:?} ({}) vs {:?} ({})",
                first.shape(),
                first.dtype(),
                p.shape(),
                p.dtype()
            ));
        }
        out_shape[axis] += p.shape()[axis];
    }
    let data = dispatch_data!(first.data(), T, _v => {
        let slices: Vec<(&[T], &[usize])> = parts
            .iter()
            .map(|p| Ok((p.as_slice::<T>()?, p.shape())))
            .collect::<Result<_>>()?;
        let mut out = vec![T::default(); out_shape.iter().product()];
        concat_into(&slices, axis, &mut out);
        Element::wrap(out)
    });
    Tensor::new(out_shape, data)
}

/// Concatenates `parts` (data, shape) along `axis` (already checked to agree elsewhere) into
/// `out`.
pub fn concat_into<T: Copy>(parts: &[(&[T], &[usize])], axis: usize, out: &mut [T]) {
    let Some((_, first)) = parts.first() else {
        return;
    };
    let outer: usize = first[..axis].iter().product();
    let mut at = 0;
    for o in 0..outer {
        for (data, shape) in parts {
            let chunk = shape[axis..].iter().product::<usize>();
            out[at..at + chunk].copy_from_slice(&data[o * chunk..(o + 1) * chunk]);
            at += chunk;
        }
    }
}

pub(super) fn split(
    x: &Tensor,
    axis: i64,
    sizes: Option<&Tensor>,
    num_outputs: usize,
) -> Result<Vec<Tensor>> {
    let axis = normalize_axis(axis, x.rank())?;
    let len = x.shape()[axis];
    let sizes: Vec<usize> = match sizes {
        Some(t) => {
            let v = t.to_i64_vec()?;
            if v.len() != num_outputs {
                return Err(shape_err!(
                    "Split sizes {v:?} do not match {num_outputs} outputs"
                ));
            }
            v.iter()
                .map(|&s| usize::try_from(s))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| shape_err!("Split sizes {v:?} must not be negative"))?
        }
        None => {
            let chunk = len.div_ceil(num_outputs.max(1));
            (0..num_outputs)
                .map(|i| chunk.min(len.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.iter().try_fold(0usize, |t, &s| t.checked_add(s)) != Some(len) {
        return Err(shape_err!("Split sizes {sizes:?} do not add up to {len}"));
    }
    let mut start = 0i64;
    let mut out = Vec::with_capacity(sizes.len());
    for s in sizes {
        let sl = Slices::new(
            x.shape(),
            &[start],
            &[start + s as i64],
            Some(&[axis as i64]),
            None,
        )?;
        out.push(sl.apply(x)?);
        start += s as i64;
    }
    Ok(out)
}

/// Resolves a Reshape target (0 copies the input dim unless `allowzero`, -1 is inferred).
pub fn reshape_shape(input: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let product = |s: &[usize]| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let total: usize =
        product(input).ok_or_else(|| shape_err!("Reshape input {input:?} overflows"))?;
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                shape_err!("Reshape target {target:?}: 0 at axis {i} has no input dim")
            })?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(shape_err!("invalid Reshape target {target:?}")),
        }
    }
    if let Some(i) = infer {
        let known = product(&out).unwrap_or(0);
        if known == 0 || !total.is_multiple_of(known) {
            return Err(shape_err!("cannot reshape {input:?} to {target:?}"));
        }
        out[i] = total / known;
    }
    if product(&out) != Some(total) {
        return Err(shape_err!(
            "cannot reshape {input:?} ({total} elements) to {target:?}"
        ));
    }
    Ok(out)
}

pub fn squeeze_shape(shape: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>> {
    match axes {
        None => Ok(shape.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let mut drop = vec![false; shape.len()];
            for &a in axes {
                let a = normalize_axis(a, shape.len())?;
                if shape[a] != 1 {
                    return Err(shape_err!(
                        "cannot squeeze axis {a} of {shape:?}: it is not 1"
                    ));
                }
                drop[a] = true;
            }
            Ok(shape
                .iter()
                .zip(drop)
                .filter(|(_, d)| !d)
                .map(|(&s, _)| s)
                .collect())
        }
    }
}

pub fn unsqueeze_shape(shape: &[usize], axes: &[i64]) -> Result<Vec<usize>> {
    let rank = shape.len() + axes.len();
    let mut is_new = vec![false; rank];
    for &a in axes {
        let a = normalize_axis(a, rank)?;
        if std::mem::replace(&mut is_new[a], true) {
            return Err(shape_err!("Unsqueeze axes {axes:?} repeat an axis"));
        }
    }
    let mut src = shape.iter();
    Ok(is_new
        .iter()
        .map(|&n| if n { 1 } else { *src.next().unwrap_or(&1) })
        .collect())
}

fn gather(x: &Tensor, indices: &Tensor, axis: i64) -> Result<Tensor> {
    let axis = normalize_axis(axis, x.rank())?;
    let len = x.shape()[axis] as i64;
    let idx: Vec<usize> = indices
        .to_i64_vec()?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + len } else { i };
            if (0..len).contains(&j) {
                Ok(j as usize)
            } else {
                Err(shape_err!(
                    "Gather index {i} out of range for axis of length {len}"
                ))
            }
        })
        .collect::<Result<_>>()?;
    let outer: usize = x.shape()[..axis].iter().product();
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let mut out_shape = x.shape()[..axis].to_vec();
    out_shape.extend_from_slice(indices.shape());
    out_shape.extend_from_slice(&x.shape()[axis + 1..]);
    checked_numel(&out_shape)?;
    let data = dispatch_data!(x.data(), T, v => {
        let mut out: Vec<T> = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in &idx {
                let at = (o * len as usize + i) * inner;
                out.extend_from_slice(&v[at..at + inner]);
            }
        }
        Element::wrap(out)
    });
    Tensor::new(out_shape, data)
}

/// Normalised Slice parameters: per axis of the input, start, step and output length.
pub struct Slices {
    pub starts: Vec<i64>,
    pub steps: Vec<i64>,
    pub out_shape: Vec<usize>,
}

impl Slices {
    pub fn new(
        shape: &[usize],
        starts: &[i64],
        ends: &[i64],
        axes: Option<&[i64]>,
        steps: Option<&[i64]>,
    ) -> Result<Slices> {
        let rank = shape.len();
        if starts.len() != ends.len()
            || axes.is_some_and(|a| a.len() != starts.len())
            || steps.is_some_and(|s| s.len() != starts.len())
        {
            return Err(shape_err!(
                "Slice starts {starts:?} and ends {ends:?} differ in length"
            ));
        }
        let axes: Vec<usize> = match axes {
            Some(a) => a
                .iter()
                .map(|&a| normalize_axis(a, rank))
                .collect::<Result<_>>()?,
            None => (0..starts.len()).collect(),
        };
        let mut s = Slices {
            starts: vec![0; rank],
            steps: vec![1; rank],
            out_shape: shape.to_vec(),
        };
        for (k, &ax) in axes.iter().enumerate() {
            let dim = shape[ax] as i64;
            let step = steps.map_or(1, |s| s[k]);
            if step == 0 {
                return Err(shape_err!("Slice step must not be 0"));
            }
            let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
            let norm = |v: i64| if v < 0 { v + dim } else { v };
            let (start, end) = if step > 0 {
                (clamp(norm(starts[k]), 0, dim), clamp(norm(ends[k]), 0, dim))
            } else {
                (
                    clamp(norm(starts[k]), -1, dim - 1),
                    clamp(norm(ends[k]), -1, dim - 1),
                )
            };
            // In i128: a step near i64::MIN or i64::MAX must not overflow.
            let (start_w, end_w, step_w) = (start as i128, end as i128, step as i128);
            let len = if step > 0 {
                (end_w - start_w + step_w - 1).div_euclid(step_w)
            } else {
                (start_w - end_w - step_w - 1).div_euclid(-step_w)
            };
            s.starts[ax] = start;
            // Only one element is taken when the step exceeds the axis: keep strides small.
            s.steps[ax] = step.clamp(-dim.max(1), dim.max(1));
            s.out_shape[ax] = len.max(0) as usize;
        }
        Ok(s)
    }

    /// Offset of the first element and per-axis source strides of the slice of `shape`.
    pub fn src_strides(&self, shape: &[usize]) -> (isize, Vec<isize>) {
        let st = strides(shape);
        let base: isize = self
            .starts
            .iter()
            .zip(&st)
            .map(|(&a, &s)| a as isize * s as isize)
            .sum();
        let src_strides: Vec<isize> = self
            .steps
            .iter()
            .zip(&st)
            .map(|(&k, &s)| k as isize * s as isize)
            .collect();
        let n: usize = self.out_shape.iter().product();
        (if n == 0 { 0 } else { base }, src_strides)
    }

    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (base, src_strides) = self.src_strides(x.shape());
        let data = dispatch_data!(x.data(), _T, v => Element::wrap(gather_strided(v, &self.out_shape, &src_strides, base)));
        Tensor::new(self.out_shape.clone(), data)
    }
}

fn tile(x: &Tensor, reps: &[i64]) -> Result<Tensor> {
    if reps.len() != x.rank() || reps.iter().any(|&r| r < 0) {
        return Err(shape_err!(
            "Tile repeats {reps:?} do not fit rank {}",
            x.rank()
        ));
    }
    // Tile is a broadcast of x seen as [1, d0, 1, d1, ...] to [r0, d0, r1, d1, ...].
    let mut out_shape = Vec::with_capacity(x.rank());
    let mut wide = Vec::with_capacity(2 * x.rank());
    let mut wide_src = Vec::with_capacity(2 * x.rank());
    for (&d, &r) in x.shape().iter().zip(reps) {
        let r = r as usize;
        out_shape.push(
            d.checked_mul(r)
                .ok_or_else(|| shape_err!("Tile repeats {reps:?} overflow"))?,
        );
        wide.extend([r, d]);
        wide_src.extend([1, d]);
    }
    checked_numel(&out_shape)?;
    let src = x.clone().reshape(wide_src)?;
    broadcast_to(&src, &wide)?.reshape(out_shape)
}

fn pad(
    x: &Tensor,
    pads: &[i64],
    value: Option<&Tensor>,
    axes: Option<&[i64]>,
    mode: PadMode,
) -> Result<Tensor> {
    let rank = x.rank();
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&a| normalize_axis(a, rank))
            .collect::<Result<_>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(shape_err!(
            "Pad expects {} pad values, got {}",
            2 * axes.len(),
            pads.len()
        ));
    }
    let mut begin = vec![0i64; rank];
    let mut end = vec![0i64; rank];
    for (k, &a) in axes.iter().enumerate() {
        begin[a] = pads[k];
        end[a] = pads[k + axes.len()];
    }
    let shape = x.shape();
    let out_shape: Vec<usize> = (0..rank)
        .map(|i| {
            (shape[i] as i64)
                .checked_add(begin[i])
                .and_then(|d| d.checked_add(end[i]))
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| {
                    shape_err!("Pad {pads:?} gives a negative or absurd dimension for {shape:?}")
                })
        })
        .collect::<Result<_>>()?;
    checked_numel(&out_shape)?;
    if mode != PadMode::Constant
        && shape
            .iter()
            .zip(&begin)
            .zip(&end)
            .any(|((&d, &b), &e)| d == 0 && (b > 0 || e > 0))
    {
        return Err(shape_err!("{mode:?} padding of an empty axis"));
    }
    let src_strides = strides(shape);
    // Maps an output coordinate on one axis to the source coordinate, or None for fill.
    let map = |i: usize, o: i64| -> Option<usize> {
        let d = shape[i] as i64;
        let s = o - begin[i];
        if (0..d).contains(&s) {
            return Some(s as usize);
        }
        match mode {
            PadMode::Constant => None,
            PadMode::Edge => Some(s.clamp(0, d - 1) as usize),
            PadMode::Reflect => {
                if d == 1 {
                    return Some(0);
                }
                let period = 2 * (d - 1);
                let m = s.rem_euclid(period);
                Some(if m < d { m } else { period - m } as usize)
            }
        }
    };
    let n: usize = out_shape.iter().product();
    let data = dispatch_data!(x.data(), T, v => {
        let fill: T = match value {
            Some(t) if !t.is_empty() => t.as_slice::<T>()?[0],
            _ => T::default(),
        };
        let mut out: Vec<T> = Vec::with_capacity(n);
        let mut idx = vec![0usize; rank];
        for _ in 0..n {
            let mut src = 0usize;
            let mut inside = true;
            for i in 0..rank {
                match map(i, idx[i] as i64) {
                    Some(s) => src += s * src_strides[i],
                    None => inside = false,
                }
            }
            out.push(if inside { v[src] } else { fill });
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < out_shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Element::wrap(out)
    });
    Tensor::new(out_shape, data)
}

/// The single value of a scalar input.
fn first<T: Copy>(v: Vec<T>) -> Result<T> {
    v.first()
        .copied()
        .ok_or_else(|| shape_err!("expected a scalar, got an empty tensor"))
}

fn range(start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<Tensor> {
    match start.dtype() {
        DType::I64 | DType::I32 => {
            let (s, l, d) = (
                first(start.to_i64_vec()?)?,
                first(limit.to_i64_vec()?)?,
                first(delta.to_i64_vec()?)?,
            );
            if d == 0 {
                return Err(shape_err!("Range delta must not be 0"));
            }
            // Exact element count in i128: limit - start may not fit in i64.
            let (sw, lw, dw) = (s as i128, l as i128, d as i128);
            let n = if d > 0 {
                (lw - sw + dw - 1).div_euclid(dw)
            } else {
                (sw - lw - dw - 1).div_euclid(-dw)
            }
            .max(0);
            if n > crate::MAX_TENSOR_ELEMENTS as i128 {
                return Err(shape_err!("Range({s}, {l}, {d}) would have {n} elements"));
            }
            let n = n as usize;
            let v: Vec<i64> = (0..n as i128).map(|i| (sw + i * dw) as i64).collect();
            let t = Tensor::from_vec(vec![n], v)?;
            if start.dtype() == DType::I32 {
                cast(&t, DType::I32)
            } else {
                Ok(t)
            }
        }
        _ => {
            let (s, l, d) = (
                first(start.to_f32_vec()?)?,
                first(limit.to_f32_vec()?)?,
                first(delta.to_f32_vec()?)?,
            );
            if ![s, l, d].iter().all(|v| v.is_finite()) {
                return Err(shape_err!("Range({s}, {l}, {d}) needs finite values"));
            }
            if d == 0.0 {
                return Err(shape_err!("Range delta must not be 0"));
            }
            let n = ((l as f64 - s as f64) / d as f64).ceil().max(0.0);
            if !n.is_finite() || n > crate::MAX_TENSOR_ELEMENTS as f64 {
                return Err(shape_err!("Range({s}, {l}, {d}) would have {n} elements"));
            }
            let n = n as usize;
            Tensor::from_vec(
                vec![n],
                (0..n).map(|i| s + i as f32 * d).collect::<Vec<_>>(),
            )
        }
    }
}

pub fn cast(x: &Tensor, to: DType) -> Result<Tensor> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    let shape = x.shape().to_vec();
    // Floats go through f64 so large integers survive; float -> int truncates toward zero.
    let as_f64: Vec<f64> = match x.data() {
        TensorData::F32(v) => v.iter().map(|&a| a as f64).collect(),
        TensorData::F16(v) => v.iter().map(|a| a.to_f64()).collect(),
        TensorData::I64(v) => {
            if to == DType::I32 {
                return Tensor::from_vec(shape, v.iter().map(|&a| a as i32).collect::<Vec<_>>());
            }
            v.iter().map(|&a| a as f64).collect()
        }
        TensorData::I32(v) => v.iter().map(|&a| a as f64).collect(),
        TensorData::U8(v) => v.iter().map(|&a| a as f64).collect(),
        TensorData::Bool(v) => v.iter().map(|&a| a as u8 as f64).collect(),
    };
    let data = match to {
        DType::F32 => TensorData::F32(as_f64.iter().map(|&a| a as f32).collect()),
        DType::F16 => TensorData::F16(as_f64.iter().map(|&a| f16::from_f64(a)).collect()),
        DType::I64 => TensorData::I64(as_f64.iter().map(|&a| a as i64).collect()),
        DType::I32 => TensorData::I32(as_f64.iter().map(|&a| a as i32).collect()),
        DType::U8 => TensorData::U8(as_f64.iter().map(|&a| a as u8).collect()),
        DType::Bool => TensorData::Bool(as_f64.iter().map(|&a| a != 0.0).collect()),
    };
    Tensor::new(shape, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_and_slice() {
        let x = Tensor::from_vec(vec![2, 3], (0..6i64).collect::<Vec<_>>()).unwrap();
        let t = transpose(&x, &[1, 0]).unwrap();
        assert_eq!(t.as_slice::<i64>().unwrap(), &[0, 3, 1, 4, 2, 5]);
        let s = Slices::new(x.shape(), &[-1], &[-100], Some(&[1]), Some(&[-2]))
            .unwrap()
            .apply(&x)
            .unwrap();
        assert_eq!(s.shape(), &[2, 2]);
        assert_eq!(s.as_slice::<i64>().unwrap(), &[2, 0, 5, 3]);
    }

    /// The channels-last to channels-first path against the strided gather, on random
    /// shapes of rank 3 to 5 with 1 to 5 channels (1 and 5 take the gather) and values.
    #[test]
    fn channels_first_matches_the_strided_gather() {
        use rand::RngExt;
        let mut rng = rand::rng();
        for _ in 0..200 {
            let rank = rng.random_range(3..=5);
            let mut shape: Vec<usize> = (0..rank).map(|_| rng.random_range(1..=6)).collect();
            shape[rank - 1] = rng.random_range(1..=5);
            let perm: Vec<usize> = [0, rank - 1].into_iter().chain(1..rank - 1).collect();
            let x: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let (out_shape, strides) = transpose_strides(&shape, &perm).unwrap();
            let mut want = vec![0.0; x.len()];
            gather_strided_into(&x, &out_shape, &strides, 0, &mut want);
            let mut got = vec![f32::NAN; x.len()];
            let taken = channels_first_into(&x, &shape, &perm, &mut got);
            assert_eq!(taken, (2..=4).contains(&shape[rank - 1]), "{shape:?}");
            if taken {
                assert_eq!(got, want, "{shape:?}");
            }
        }
        // Other permutations are left to the gather.
        let mut out = vec![0.0f32; 24];
        assert!(!channels_first_into(
            &[0.0; 24],
            &[2, 3, 4],
            &[0, 1, 2],
            &mut out
        ));
        assert!(!channels_first_into(
            &[0.0; 24],
            &[2, 3, 4],
            &[2, 0, 1],
            &mut out
        ));
    }

    #[test]
    fn reshape_rules() {
        assert_eq!(
            reshape_shape(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert!(reshape_shape(&[2, 3, 4], &[5, -1], false).is_err());
        assert_eq!(unsqueeze_shape(&[3], &[0, -1]).unwrap(), vec![1, 3, 1]);
    }

    #[test]
    fn pad_modes() {
        let x = Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap();
        let r = pad(&x, &[2, 2], None, None, PadMode::Reflect).unwrap();
        assert_eq!(
            r.as_slice::<f32>().unwrap(),
            &[3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]
        );
        let e = pad(&x, &[1, 1], None, None, PadMode::Edge).unwrap();
        assert_eq!(e.as_slice::<f32>().unwrap(), &[1.0, 1.0, 2.0, 3.0, 3.0]);
    }
}
