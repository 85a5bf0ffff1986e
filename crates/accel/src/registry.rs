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
    let mut probes: Vec<Probe> = vec![Probe {
        id: "cpu".into(),
        backend: Ok(Arc::new(accel_cpu::CpuBackend::new())),
    }];
    probes.extend(accel_wgpu::probe());
    probes.extend(accel_ort::probe());
    probes.extend(accel_candle::probe());
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
    let entries = probe_backends();
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
