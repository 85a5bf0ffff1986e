//! `auto`: the planner's choice among the backends this machine offers.

use crate::registry::{BackendEntry, Probing, family_entries, probe_for_planning};
use accel_core::{CompileOptions, Error, Precision, Result};
use accel_planner::Candidate;

/// Every available backend with the options worth trying on it: the cpu backend and ONNX
/// Runtime's providers at one thread and at one per physical core, each wgpu adapter in
/// f32 and, where it has SHADER_F16, in f16. ONNX Runtime's providers are included untried
/// (see `probe_for_planning`): one that cannot run here fails in the plan, with the reason.
pub fn default_candidates() -> Vec<Candidate> {
    candidates_from(probe_for_planning(), false)
}

/// The candidates of these entries; `named` when the caller asked for these backends by
/// name (software GPU adapters are measured then).
fn candidates_from(entries: Vec<BackendEntry>, named: bool) -> Vec<Candidate> {
    let cores = accel_cpu::CpuBackend::default_threads();
    let threads: Vec<Option<usize>> = if cores > 1 {
        vec![Some(1), Some(cores)]
    } else {
        vec![Some(1)]
    };
    let mut out = Vec::new();
    for entry in entries {
        let Ok(backend) = entry.backend else { continue };
        let with = |threads, precision| CompileOptions {
            threads,
            precision,
            ..Default::default()
        };
        let device = backend.device();
        // Threads matter to backends that compute on the CPU (ONNX Runtime's accelerator
        // providers run their graph on the device).
        if entry.id == "cpu" || (entry.id.starts_with("ort-") && device.kind == "cpu") {
            for &t in &threads {
                out.push(Candidate::new(backend.clone(), with(t, Precision::F32)));
            }
        } else if entry.id.starts_with("wgpu") {
            let f16 = device.details.iter().any(|(_, v)| v.contains("shader-f16"));
            let precisions = if f16 {
                vec![Precision::F32, Precision::F16]
            } else {
                vec![Precision::F32]
            };
            for p in precisions {
                // A software adapter (lavapipe, WARP, SwiftShader) computes on the same
                // cores as the cpu backend, shaped for a GPU: listed, not measured, unless
                // named (`candidates_of`).
                out.push(if device.kind == "cpu" && !named {
                    Candidate::skipped(
                        backend.clone(),
                        with(None, p),
                        format!(
                            "a software adapter on the CPU the cpu backend runs on; name \
                             {} to measure it",
                            entry.id
                        ),
                    )
                } else {
                    Candidate::new(backend.clone(), with(None, p))
                });
            }
        } else {
            out.push(Candidate::new(backend.clone(), with(None, Precision::F32)));
        }
    }
    out
}

/// Only the candidates of these backend ids ("wgpu" names every adapter); an id that is
/// unknown or unavailable here is an error saying why.
pub fn candidates_of(ids: &[String]) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for id in ids {
        let matched: Vec<Candidate> =
            candidates_from(family_entries(id, Probing::Unverified), true)
                .into_iter()
                .filter(|c| c.id() == id || (id == "wgpu" && c.id().starts_with("wgpu")))
                .collect();
        if matched.is_empty() {
            crate::available_backend(id)?;
            return Err(Error::Other(format!("{id} has no candidate options")));
        }
        out.extend(matched);
    }
    Ok(out)
}
