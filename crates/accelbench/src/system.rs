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

/// Cumulative package energy in microjoules from RAPL (powercap), if readable.
pub fn energy_uj() -> Option<u64> {
    std::fs::read_to_string("/sys/class/powercap/intel-rapl:0/energy_uj")
        .ok()?
        .trim()
        .parse()
        .ok()
}
