//! Every backend accel knows, probed on this machine.

use accel_core::{Backend, Error, Probe, Result};
use std::sync::Arc;

/// A backend id with its device description, or the reason it cannot run here.
pub struct BackendEntry {
    pub id: String,
    pub backend: std::result::Result<Arc<dyn Backend>, String>,
}

/// Probes all backends, in a stable order: cpu, wgpu, ort-*, candle-*. The families are
/// probed at once, each on its own thread: creating a Vulkan instance and loading ONNX
/// Runtime take tens of milliseconds each, and a cached plan's lookup waits for both.
pub fn probe_backends() -> Vec<BackendEntry> {
    probe_all(Probing::Verified)
}

/// What the planner starts from: every backend, with ONNX Runtime's providers untried (a
/// session each would cost a cached plan's lookup its time); the planner compiles every
/// candidate anyway and reports a provider that cannot run with the reason.
pub(crate) fn probe_for_planning() -> Vec<BackendEntry> {
    probe_all(Probing::Unverified)
}

/// Whether ONNX Runtime's providers are tried at probe time.
#[derive(Clone, Copy)]
pub(crate) enum Probing {
    Verified,
    Unverified,
}

fn probe_all(how: Probing) -> Vec<BackendEntry> {
    let families = [Family::Cpu, Family::Wgpu, Family::Ort, Family::Candle];
    let probes: Vec<Vec<Probe>> = std::thread::scope(|s| {
        let handles: Vec<_> = families
            .iter()
            .map(|&f| s.spawn(move || probe_family(f, how)))
            .collect();
        handles
            .into_iter()
            .zip(families)
            .map(|(h, f)| h.join().unwrap_or_else(|_| vec![panicked(f)]))
            .collect()
    });
    entries(probes.into_iter().flatten().collect())
}

/// A probe that panicked is that family's unavailability, not the caller's crash.
fn panicked(f: Family) -> Probe {
    Probe {
        id: format!("{f:?}").to_lowercase(),
        backend: Err("probing this backend panicked".into()),
    }
}

/// The crates backends come from: probing one does not touch the others (no Vulkan
/// instance for a cpu run, no ORT library load for a wgpu one).
#[derive(Clone, Copy, Debug)]
enum Family {
    Cpu,
    Wgpu,
    Ort,
    Candle,
}

fn probe_family(f: Family, how: Probing) -> Vec<Probe> {
    match f {
        Family::Cpu => vec![Probe {
            id: "cpu".into(),
            backend: Ok(Arc::new(accel_cpu::CpuBackend::new())),
        }],
        Family::Wgpu => accel_wgpu::probe(),
        Family::Ort => match how {
            Probing::Verified => accel_ort::probe(),
            Probing::Unverified => accel_ort::probe_unverified(),
        },
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

/// The entries of the family `id` belongs to (every backend's for an unknown id).
pub(crate) fn family_entries(id: &str, how: Probing) -> Vec<BackendEntry> {
    match family_of(id) {
        Some(f) => entries(probe_family(f, how)),
        None => probe_all(how),
    }
}

/// The backend with this id, or an error saying why it cannot be used.
pub fn available_backend(id: &str) -> Result<Arc<dyn Backend>> {
    let entries = family_entries(id, Probing::Verified);
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
