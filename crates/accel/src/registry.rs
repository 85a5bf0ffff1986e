//! Every backend accel knows, probed on this machine.

use accel_core::{Backend, Error, Probe, Result};
use std::sync::Arc;

/// A backend id with its device description, or the reason it cannot run here.
pub struct BackendEntry {
    pub id: String,
    pub backend: std::result::Result<Arc<dyn Backend>, String>,
}

/// Probes all backends, in a stable order: cpu, wgpu, ort-*, candle-*.
pub fn probe_backends() -> Vec<BackendEntry> {
    entries(
        probe_family(Family::Cpu)
            .into_iter()
            .chain(probe_family(Family::Wgpu))
            .chain(probe_family(Family::Ort))
            .chain(probe_family(Family::Candle))
            .collect(),
    )
}

/// The crates backends come from: probing one does not touch the others (no Vulkan
/// instance for a cpu run, no ORT library load for a wgpu one).
#[derive(Clone, Copy)]
enum Family {
    Cpu,
    Wgpu,
    Ort,
    Candle,
}

fn probe_family(f: Family) -> Vec<Probe> {
    match f {
        Family::Cpu => vec![Probe {
            id: "cpu".into(),
            backend: Ok(Arc::new(accel_cpu::CpuBackend::new())),
        }],
        Family::Wgpu => accel_wgpu::probe(),
        Family::Ort => accel_ort::probe(),
        Family::Candle => accel_candle::probe(),
    }
}

/// The family a backend id belongs to, if any.
fn family_of(id: &str) -> Option<Family> {
    match id {
        "cpu" => Some(Family::Cpu),
        _ if id == "wgpu" || id.starts_with("wgpu:") => Some(Family::Wgpu),
        _ if id.starts_with("ort-") => Some(Family::Ort),
        _ if id.starts_with("candle-") => Some(Family::Candle),
        _ => None,
    }
}

fn entries(probes: Vec<Probe>) -> Vec<BackendEntry> {
    probes
        .into_iter()
        .map(|p| BackendEntry {
            id: p.id,
            backend: p.backend,
        })
        .collect()
}

/// The backend with this id, or an error saying why it cannot be used.
pub fn available_backend(id: &str) -> Result<Arc<dyn Backend>> {
    let entries = match family_of(id) {
        Some(f) => entries(probe_family(f)),
        None => probe_backends(),
    };
    // "wgpu" means the first wgpu adapter.
    let entry = entries
        .iter()
        .find(|e| e.id == id || (id == "wgpu" && e.id.starts_with("wgpu")));
    match entry {
        Some(BackendEntry { backend: Ok(b), .. }) => Ok(b.clone()),
        Some(BackendEntry {
            backend: Err(reason),
            ..
        }) => Err(Error::BackendUnavailable {
            backend: id.to_string(),
            reason: reason.clone(),
        }),
        None => Err(Error::BackendUnavailable {
            backend: id.to_string(),
            reason: format!(
                "unknown backend; known: {}",
                entries
                    .iter()
                    .map(|e| e.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}
