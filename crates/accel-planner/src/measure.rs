//! Latency measurement: warm-up runs, then timed runs, reported as percentiles.

use std::time::{Duration, Instant};

/// Latency distribution of repeated runs, in milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyStats {
    pub samples_ms: Vec<f64>,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl LatencyStats {
    pub fn from_samples(mut samples_ms: Vec<f64>) -> LatencyStats {
        samples_ms.sort_by(f64::total_cmp);
        let mean_ms = samples_ms.iter().sum::<f64>() / samples_ms.len().max(1) as f64;
        LatencyStats {
            p50_ms: percentile(&samples_ms, 50.0),
            p90_ms: percentile(&samples_ms, 90.0),
            p99_ms: percentile(&samples_ms, 99.0),
            mean_ms,
            samples_ms,
        }
    }
}

/// The process's resident memory in bytes (Linux; None elsewhere).
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `f` `warmup` times untimed, then `iters` times timed. Stops timing early once
/// `budget` has elapsed (after at least one timed run); the second value says whether it did.
pub fn measure<E>(
    warmup: usize,
    iters: usize,
    budget: Option<Duration>,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<(LatencyStats, bool), E> {
    for _ in 0..warmup {
        f()?;
    }
    let start = Instant::now();
    let mut samples = Vec::with_capacity(iters);
    let mut cut_short = false;
    for i in 0..iters.max(1) {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        if budget.is_some_and(|b| start.elapsed() > b) && i + 1 < iters {
            cut_short = true;
            break;
        }
    }
    Ok((LatencyStats::from_samples(samples), cut_short))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = LatencyStats::from_samples((1..=100).rev().map(f64::from).collect());
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms), (50.0, 90.0, 99.0));
        assert_eq!(s.samples_ms[0], 1.0);
    }

    #[test]
    fn budget_cuts_timing_short_and_says_so() {
        let (s, cut) = measure::<()>(1, 1000, Some(Duration::from_millis(5)), || {
            std::thread::sleep(Duration::from_millis(2));
            Ok(())
        })
        .unwrap();
        assert!(cut);
        assert!(s.samples_ms.len() < 1000);
        let (s, cut) = measure::<()>(0, 3, None, || Ok(())).unwrap();
        assert!(!cut);
        assert_eq!(s.samples_ms.len(), 3);
    }
}
