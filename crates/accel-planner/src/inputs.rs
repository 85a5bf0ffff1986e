//! What the planner and `accelbench bench` feed a graph and how they compare what comes out.

use accel_core::{DType, Dim, Error, Graph, Result, Tensor};
use rand::RngExt;

/// A fresh uniform [0, 1) input for every graph input, the batch dimension set to `batch`.
pub fn random_inputs(graph: &Graph, batch: usize) -> Result<Vec<Tensor>> {
    let mut rng = rand::rng();
    graph
        .inputs
        .iter()
        .map(|vi| {
            let dims = vi.shape.as_ref().ok_or_else(|| {
                Error::Other(format!("input '{}' has no declared shape", vi.name))
            })?;
            let shape: Vec<usize> = dims
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Known(n) if i == 0 && *n != batch => Err(Error::Other(format!(
                        "input '{}' has a fixed batch of {n}; use batch {n}",
                        vi.name
                    ))),
                    Dim::Known(n) => Ok(*n),
                    Dim::Sym(_) if i == 0 => Ok(batch),
                    Dim::Sym(s) => Err(Error::Other(format!(
                        "input '{}' has a free dimension '{s}' besides the batch",
                        vi.name
                    ))),
                })
                .collect::<Result<_>>()?;
            let n: usize = shape.iter().product();
            match vi.dtype {
                DType::F32 => Tensor::from_vec(
                    shape,
                    (0..n).map(|_| rng.random::<f32>()).collect::<Vec<_>>(),
                ),
                other => Err(Error::Other(format!(
                    "random inputs are f32 only; input '{}' is {other}",
                    vi.name
                ))),
            }
        })
        .collect()
}

/// The largest |a - b| over all outputs (NaN if either has one); None when the outputs do
/// not line up (count, size or a non-numeric type).
pub fn max_abs_diff(a: &[Tensor], b: &[Tensor]) -> Option<f64> {
    if a.len() != b.len() {
        return None;
    }
    let mut m = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let (xv, yv) = (x.to_f32_vec().ok()?, y.to_f32_vec().ok()?);
        if xv.len() != yv.len() {
            return None;
        }
        for (p, q) in xv.iter().zip(&yv) {
            let d = (*p as f64 - *q as f64).abs();
            if d.is_nan() {
                return Some(f64::NAN);
            }
            m = m.max(d);
        }
    }
    Some(m)
}

/// The largest |value| of the outputs, for tolerances relative to their scale.
pub fn max_abs(t: &[Tensor]) -> f64 {
    t.iter()
        .filter_map(|x| x.to_f32_vec().ok())
        .flatten()
        .fold(0.0f64, |m, v| m.max((v as f64).abs()))
}
