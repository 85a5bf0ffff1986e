//! accel-wgpu: accel's GPU backend on wgpu compute pipelines.
//!
//! Not built yet: probing reports every backend id of this crate as unavailable, with the
//! reason, so `accelbench devices` and `bench` show it instead of silently leaving it out.

use accel_core::Probe;

/// Backend ids this crate will provide.
pub const BACKEND_IDS: &[&str] = &["wgpu"];

/// Probes this machine for the backends of this crate.
pub fn probe() -> Vec<Probe> {
    BACKEND_IDS
        .iter()
        .map(|id| Probe::unavailable(*id, "the wgpu backend is not implemented yet (issue #6)"))
        .collect()
}
