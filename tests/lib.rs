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

/// One case of the parity manifest that scripts/reference_outputs.py writes: a model at a
/// batch, with fresh random inputs and ONNX Runtime's outputs for them.
pub struct ParityCase {
    pub model: String,
    pub batch: u64,
    dir: PathBuf,
    json: serde_json::Value,
}

impl ParityCase {
    /// The case's inputs, in the order of `graph.inputs`.
    pub fn inputs(&self, graph: &accel_core::Graph) -> Vec<Tensor> {
        graph
            .inputs
            .iter()
            .map(|vi| self.npy("inputs", &vi.name))
            .collect()
    }

    /// ONNX Runtime's value of the graph output `name`.
    pub fn expected(&self, name: &str) -> Tensor {
        self.npy("outputs", name)
    }

    fn npy(&self, kind: &str, name: &str) -> Tensor {
        let file = self.json[kind][name]
            .as_str()
            .unwrap_or_else(|| panic!("{}: the manifest lists no {kind} {name}", self.model));
        accel_core::npy::read_npy(self.dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }
}

/// The parity manifest's cases, or `None` when the data is missing (a failure in CI, a
/// skip elsewhere; `what` names the test).
pub fn parity_cases(what: &str) -> Option<Vec<ParityCase>> {
    let dir = testdata_dir().join("parity");
    let manifest = dir.join("manifest.json");
    if !require(
        manifest.exists(),
        what,
        "no reference outputs; run scripts/test.sh",
    ) {
        return None;
    }
    let text = std::fs::read_to_string(&manifest).expect("the manifest is readable");
    let v: serde_json::Value = serde_json::from_str(&text).expect("the manifest is JSON");
    let cases: Vec<ParityCase> = v["cases"]
        .as_array()
        .expect("the manifest has cases")
        .iter()
        .map(|c| ParityCase {
            model: c["model"]
                .as_str()
                .expect("a case names its model")
                .to_string(),
            batch: c["batch"].as_u64().expect("a case has a batch"),
            dir: dir.clone(),
            json: c.clone(),
        })
        .collect();
    assert!(!cases.is_empty(), "the manifest lists no cases");
    Some(cases)
}
