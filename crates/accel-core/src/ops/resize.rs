//! Resize (nearest and linear, the modes exporters emit for upsampling).

use crate::ir::{CoordTransform, NearestMode, Resize, ResizeMode};
use crate::{Result, Tensor, TensorData, shape_err};

/// Output size and scale per axis from the `scales` or `sizes` input.
pub fn resize_geometry(
    shape: &[usize],
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let rank = shape.len();
    if let Some(sz) = sizes.filter(|t| !t.is_empty()) {
        let sz = sz.to_i64_vec()?;
        if sz.len() != rank {
            return Err(shape_err!("Resize sizes {sz:?} do not match rank {rank}"));
        }
        let out: Vec<usize> = sz
            .iter()
            .map(|&s| usize::try_from(s))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| shape_err!("Resize sizes {sz:?} must not be negative"))?;
        crate::checked_numel(&out)?;
        let scales = out
            .iter()
            .zip(shape)
            .map(|(&o, &i)| o as f32 / i.max(1) as f32)
            .collect();
        return Ok((out, scales));
    }
    let sc = scales
        .filter(|t| !t.is_empty())
        .ok_or_else(|| shape_err!("Resize needs scales or sizes"))?
        .to_f32_vec()?;
    if sc.len() != rank {
        return Err(shape_err!("Resize scales {sc:?} do not match rank {rank}"));
    }
    if sc.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
        return Err(shape_err!(
            "Resize scales {sc:?} must be positive and finite"
        ));
    }
    let out: Vec<usize> = shape
        .iter()
        .zip(&sc)
        .map(|(&d, &s)| {
            let o = (d as f64 * s as f64).floor();
            if o > crate::MAX_TENSOR_ELEMENTS as f64 {
                Err(shape_err!(
                    "Resize scales {sc:?} make an absurd output from {shape:?}"
                ))
            } else {
                Ok(o as usize)
            }
        })
        .collect::<Result<_>>()?;
    crate::checked_numel(&out)?;
    Ok((out, sc))
}

fn source_coord(coord: CoordTransform, o: usize, scale: f32, in_len: usize, out_len: usize) -> f32 {
    let o = o as f32;
    match coord {
        CoordTransform::HalfPixel => (o + 0.5) / scale - 0.5,
        CoordTransform::PytorchHalfPixel => {
            if out_len > 1 {
                (o + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        CoordTransform::AlignCorners => {
            if out_len > 1 {
                o * (in_len as f32 - 1.0) / (out_len as f32 - 1.0)
            } else {
                0.0
            }
        }
        CoordTransform::Asymmetric | CoordTransform::TfCropAndResize => o / scale,
    }
}

fn nearest(mode: NearestMode, x: f32) -> f32 {
    match mode {
        NearestMode::RoundPreferFloor => {
            if x.fract() == 0.5 {
                x.floor()
            } else {
                x.round()
            }
        }
        NearestMode::RoundPreferCeil => x.round(),
        NearestMode::Floor => x.floor(),
        NearestMode::Ceil => x.ceil(),
    }
}

/// Per output index along one axis: (low source index, high source index, weight of high).
fn axis_taps(r: &Resize, in_len: usize, out_len: usize, scale: f32) -> Vec<(usize, usize, f32)> {
    let max = in_len.saturating_sub(1) as f32;
    (0..out_len)
        .map(|o| {
            let x = source_coord(r.coord, o, scale, in_len, out_len);
            match r.mode {
                ResizeMode::Nearest => {
                    let i = nearest(r.nearest_mode, x).clamp(0.0, max) as usize;
                    (i, i, 0.0)
                }
                ResizeMode::Linear => {
                    let x = x.clamp(0.0, max);
                    let lo = x.floor();
                    let hi = (lo + 1.0).min(max);
                    (lo as usize, hi as usize, x - lo)
                }
            }
        })
        .collect()
}

pub(super) fn resize(
    r: &Resize,
    x: &Tensor,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> Result<Tensor> {
    let (out_shape, sc) = resize_geometry(x.shape(), scales, sizes)?;
    // Separable: resize one axis at a time.
    let mut cur = x.to_f32_vec()?;
    let mut shape = x.shape().to_vec();
    for axis in 0..shape.len() {
        if shape[axis] == out_shape[axis] && sc[axis] == 1.0 {
            continue;
        }
        if shape[axis] == 0 && out_shape[axis] > 0 {
            return Err(shape_err!(
                "Resize cannot fill axis {axis} of {out_shape:?} from an empty input {:?}",
                x.shape()
            ));
        }
        let taps = axis_taps(r, shape[axis], out_shape[axis], sc[axis]);
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut next = Vec::with_capacity(outer * out_shape[axis] * inner);
        for o in 0..outer {
            let base = o * shape[axis] * inner;
            for &(lo, hi, w) in &taps {
                for i in 0..inner {
                    let a = cur[base + lo * inner + i];
                    let b = cur[base + hi * inner + i];
                    next.push(if w == 0.0 { a } else { a + (b - a) * w });
                }
            }
        }
        shape[axis] = out_shape[axis];
        cur = next;
    }
    match x.data() {
        TensorData::F16(_) => Tensor::from_vec(
            shape,
            cur.into_iter().map(half::f16::from_f32).collect::<Vec<_>>(),
        ),
        _ => Tensor::from_vec(shape, cur),
    }
}
