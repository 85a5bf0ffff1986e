//! Helpers shared by the integration tests: where things are, random tensors, comparisons,
//! and the rule for missing test data (fail in CI, skip loudly elsewhere).

use accel_core::Tensor;
use rand::RngExt;
use std::path::PathBuf;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

pub fn model_path(file: &str) -> PathBuf {
    workspace_root().join("models").join(file)
}

/// Generated test data (reference outputs made by the README's test set-up).
pub fn testdata_dir() -> PathBuf {
    std::env::var_os("ACCEL_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/accel-testdata"))
}

/// Missing prerequisites fail the test in CI and are reported as skipped elsewhere.
/// Returns `false` when the caller should return early (skipped).
pub fn require(available: bool, what: &str, reason: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what}: {reason} (CI must run this; the README's test command sets it up)");
    }
    eprintln!("SKIPPED {what}: {reason}");
    false
}

pub fn random_f32(shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let mut rng = rand::rng();
    let n = shape.iter().product();
    Tensor::from_vec(
        shape.to_vec(),
        (0..n).map(|_| rng.random_range(lo..hi)).collect::<Vec<_>>(),
    )
    .expect("shape matches")
}

/// Largest absolute difference; NaN where one side is NaN and the other is not.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let (x, y) = (
        a.to_f32_vec().expect("numeric"),
        b.to_f32_vec().expect("numeric"),
    );
    x.iter().zip(&y).fold(0.0f32, |m, (p, q)| {
        if p.is_nan() && q.is_nan() {
            m
        } else {
            let d = (p - q).abs();
            if d.is_nan() { f32::NAN } else { m.max(d) }
        }
    })
}

/// The first wgpu adapter's backend. With `ACCEL_REQUIRE_WGPU=1` (the README's test command
/// sets it, after installing lavapipe) a machine without one fails the test; elsewhere the
/// test is reported as skipped, with the reason.
pub fn wgpu_backend() -> Option<std::sync::Arc<dyn accel_core::Backend>> {
    let probes = accel_wgpu::probe();
    let found = probes.into_iter().find_map(|p| p.backend.ok());
    if found.is_none() {
        let reason = accel_wgpu::NO_ADAPTER;
        if std::env::var("ACCEL_REQUIRE_WGPU").is_ok_and(|v| v == "1") {
            panic!("wgpu: {reason} (ACCEL_REQUIRE_WGPU=1)");
        }
        eprintln!("SKIPPED wgpu tests: {reason}");
    }
    found
}
