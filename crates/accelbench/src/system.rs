//! Process memory and energy counters, where the platform exposes them.

/// A field of /proc/self/status in MiB (Linux only).
fn status_mb(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn rss_mb() -> Option<f64> {
    status_mb("VmRSS:")
}

/// Resets the kernel's peak-RSS mark so the next `peak_rss_mb` covers only what follows.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub fn peak_rss_mb() -> Option<f64> {
    status_mb("VmHWM:")
}

/// Cumulative energy in microjoules over the counters this machine exposes: the CPU package
/// (RAPL, under /sys/class/powercap) and every NVIDIA GPU (NVML's total energy, loaded at run
/// time from the driver's libnvidia-ml). None when there is neither, and bench says "n/a".
pub fn energy_uj() -> Option<u64> {
    match (rapl_uj(), nvml_uj()) {
        (None, None) => None,
        (cpu, gpu) => Some(cpu.unwrap_or(0) + gpu.unwrap_or(0)),
    }
}

fn rapl_uj() -> Option<u64> {
    std::fs::read_to_string("/sys/class/powercap/intel-rapl:0/energy_uj")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// NVML, initialised once per process (None where the library or a GPU is missing).
fn nvml() -> Option<&'static nvml_wrapper::Nvml> {
    static NVML: std::sync::OnceLock<Option<nvml_wrapper::Nvml>> = std::sync::OnceLock::new();
    NVML.get_or_init(|| nvml_wrapper::Nvml::init().ok())
        .as_ref()
}

fn nvml_uj() -> Option<u64> {
    let nvml = nvml()?;
    let mut total_mj = 0u64;
    let mut any = false;
    for i in 0..nvml.device_count().ok()? {
        // Volta and later; older GPUs have no energy counter.
        if let Ok(mj) = nvml
            .device_by_index(i)
            .and_then(|d| d.total_energy_consumption())
        {
            total_mj += mj;
            any = true;
        }
    }
    any.then_some(total_mj * 1000)
}
