//! accel: load an ONNX model once, compile it for a backend, run it many times.
//!
//! ```no_run
//! let session = accel::Session::builder().backend("cpu").threads(2).load("models/crnn.onnx")?;
//! # Ok::<(), accel::Error>(())
//! ```
//!
//! The task APIs take images and give answers: [`MeterReader`] reads a meter's digits,
//! [`DefectInspector`] finds defects on a plate.

mod auto;
mod backend;
mod registry;
mod session;
pub mod tasks;

pub use accel_core::{CompileOptions, DType, Error, Precision, Result, Tensor, TensorView};
pub use accel_planner::{
    CacheStatus, Candidate, CandidateReport, Objective, Plan, PlanCache, PlanConfig, Status,
};
pub use auto::{candidates_of, default_candidates};
pub use backend::Backend;
pub use registry::{BackendEntry, available_backend, probe_backends};
pub use session::{Session, SessionBuilder};
pub use tasks::{
    DefectInspector, DigitReading, ImageLimits, ImageSource, Inspection, MeterReader, MeterReading,
    Region,
};

/// The shipped models, by short name: `crnn` (meter reader) and `unet` (defect segmenter).
pub fn shipped_model(name: &str) -> Option<std::path::PathBuf> {
    let file = match name {
        "crnn" => "crnn.onnx",
        "unet" | "unet128" => "unet128.onnx",
        _ => return None,
    };
    models_dir().map(|d| d.join(file))
}

/// Where the shipped models live: `ACCEL_MODELS_DIR`, else `models/` in the working directory,
/// else the source tree this binary was built from.
pub fn models_dir() -> Option<std::path::PathBuf> {
    if let Ok(d) = std::env::var("ACCEL_MODELS_DIR") {
        return Some(d.into());
    }
    let local = std::path::PathBuf::from("models");
    if local.join("crnn.onnx").exists() {
        return Some(local);
    }
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    built.exists().then_some(built)
}
