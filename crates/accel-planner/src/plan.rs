//! The planner proper: every candidate is compiled, run once against the reference backend
//! on the same fresh random input and rejected with the measured difference if it disagrees,
//! then timed (the candidates taking turns, until each median is stable or the budget is
//! spent), and the best by the objective wins. The plan keeps every candidate's numbers or
//! the reason it lost, so a person can see why.

use crate::inputs::{max_abs, max_abs_diff, random_inputs};
use crate::measure::{LatencyStats, rss_bytes};
use accel_core::{
    Backend, CompileOptions, Error, Executable, Graph, MemoryStats, Precision, Result, Tensor,
    TensorView,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A backend with compile options worth trying.
#[derive(Clone)]
pub struct Candidate {
    pub backend: Arc<dyn Backend>,
    pub options: CompileOptions,
    /// Listed in the plan but not measured, for this reason.
    pub skip: Option<String>,
}

impl Candidate {
    pub fn new(backend: Arc<dyn Backend>, options: CompileOptions) -> Candidate {
        Candidate {
            backend,
            options,
            skip: None,
        }
    }

    /// A candidate the plan lists with the reason it was not measured.
    pub fn skipped(
        backend: Arc<dyn Backend>,
        options: CompileOptions,
        reason: impl Into<String>,
    ) -> Candidate {
        Candidate {
            backend,
            options,
            skip: Some(reason.into()),
        }
    }

    pub fn id(&self) -> &str {
        self.backend.id()
    }

    /// "cpu (2 threads, f32)", "wgpu:0 (f16)".
    pub fn label(&self) -> String {
        match self.options.threads {
            Some(t) => format!(
                "{} ({t} thread{}, {})",
                self.id(),
                if t == 1 { "" } else { "s" },
                self.options.precision
            ),
            None => format!("{} ({})", self.id(), self.options.precision),
        }
    }
}

/// What the plan optimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The median latency of one request at the plan's batch (1 by default).
    Latency,
    /// Images per second at the plan's batch: batch over the mean run time, so that slow
    /// tails count.
    Throughput,
}

impl std::str::FromStr for Objective {
    type Err = Error;
    fn from_str(s: &str) -> Result<Objective> {
        match s {
            "latency" => Ok(Objective::Latency),
            "throughput" => Ok(Objective::Throughput),
            _ => Err(Error::Other(format!(
                "unknown objective '{s}' (latency or throughput)"
            ))),
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Latency => "latency",
            Objective::Throughput => "throughput",
        })
    }
}

/// What the planner is doing, for a progress display.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Compiling and checking candidate `index` of `of`.
    Checking {
        index: usize,
        of: usize,
        label: String,
    },
    /// Timed runs: how much of the budget has gone.
    Timing { spent: Duration, budget: Duration },
}

/// A progress callback (`PlanConfig::progress`).
#[derive(Clone)]
pub struct OnProgress(pub Arc<dyn Fn(&Progress) + Send + Sync>);

impl std::fmt::Debug for OnProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnProgress")
    }
}

#[derive(Clone, Debug)]
pub struct PlanConfig {
    pub objective: Objective,
    /// The batch every candidate is checked and timed at.
    pub batch: usize,
    /// Wall time for the whole plan: compiling and checking every candidate first, then
    /// their timed runs in what is left, but never less than a quarter of it (a slow
    /// compile cannot leave nothing to time). `Plan::planning_ms` says what it all took.
    pub budget: Duration,
    /// Candidates whose compiled model holds more than this many bytes (weights, arena and
    /// scratch as the backend reports them, else the process's resident growth over compile
    /// and first run) are rejected.
    pub memory_cap: Option<u64>,
    /// Told what the planner is doing (not part of the plan or its key).
    pub progress: Option<OnProgress>,
}

impl PlanConfig {
    fn report(&self, p: Progress) {
        if let Some(OnProgress(f)) = &self.progress {
            f(&p);
        }
    }
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            objective: Objective::Latency,
            batch: 1,
            budget: Duration::from_millis(DEFAULT_BUDGET_MS),
            memory_cap: None,
            progress: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Agreed with the reference and was timed.
    Ok,
    /// Ran, but disagreed with the reference or broke the memory cap.
    Rejected,
    /// Could not compile or run.
    Failed,
    /// Not measured (see its reason).
    Skipped,
}

impl Status {
    /// As the plan's JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// One candidate's numbers, or why it lost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateReport {
    pub backend: String,
    pub device: String,
    pub threads: Option<usize>,
    pub precision: String,
    pub status: Status,
    pub reason: Option<String>,
    /// Compile time.
    pub init_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub throughput_ips: Option<f64>,
    /// Timed runs.
    pub runs: usize,
    /// The budget ran out before its median was stable.
    pub cut_short: bool,
    pub max_abs_diff: Option<f64>,
    /// What max_abs_diff was held to.
    pub tolerance: f64,
    pub memory_mb: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The winning candidate's backend id, if any candidate passed.
    pub winner: Option<String>,
    /// Its index in `candidates`.
    pub winner_index: Option<usize>,
    pub objective: Objective,
    pub batch: usize,
    /// The backend whose outputs the candidates were checked against.
    pub reference: String,
    pub budget_ms: f64,
    /// What planning took, compiling and checking included.
    pub planning_ms: f64,
    pub candidates: Vec<CandidateReport>,
}

impl Plan {
    /// Indices of the candidates that passed, best first by the objective.
    pub fn ranking(&self) -> Vec<usize> {
        let mut ok: Vec<usize> = (0..self.candidates.len())
            .filter(|&i| self.candidates[i].status == Status::Ok)
            .collect();
        let cost = |i: &usize| {
            let c = &self.candidates[*i];
            match self.objective {
                Objective::Latency => c.p50_ms.unwrap_or(f64::INFINITY),
                Objective::Throughput => -c.throughput_ips.unwrap_or(0.0),
            }
        };
        ok.sort_by(|a, b| cost(a).total_cmp(&cost(b)));
        ok
    }
}

/// f32 backends agree with the reference within 1e-4 of the outputs' scale, f16 ones
/// within 1e-2 (the project's tolerances).
pub fn tolerance(precision: Precision) -> f64 {
    match precision {
        Precision::F32 => 1e-4,
        Precision::F16 => 1e-2,
    }
}

/// Runs per turn of a candidate, and the bounds on its timed runs.
const TURN: usize = 3;
const MIN_RUNS: usize = 9;
const MAX_RUNS: usize = 300;
/// The default planning budget: under the 2 s per model a person waits for once.
pub const DEFAULT_BUDGET_MS: u64 = 1800;
/// A median is stable when the two halves of the samples have medians this close.
const STABLE: f64 = 0.03;

/// Plans `graph` (already optimized) over `candidates`.
pub fn plan(
    graph: &Graph,
    reference: &dyn Backend,
    candidates: &[Candidate],
    config: &PlanConfig,
) -> Result<Plan> {
    let start = Instant::now();
    let inputs = random_inputs(graph, config.batch.max(1))?;
    let views: Vec<TensorView> = inputs.iter().map(|t| t.view()).collect();
    let (mut reports, mut timed) = check_all(graph, reference, candidates, &views, config, None)?;
    let timing = config
        .budget
        .saturating_sub(start.elapsed())
        .max(config.budget / 4);
    take_turns(&mut timed, &views, timing, config);
    for t in timed {
        let r = &mut reports[t.index];
        if let Some(e) = t.failed {
            r.status = Status::Failed;
            r.reason = Some(format!("failed while being timed: {e}"));
            continue;
        }
        let s = LatencyStats::from_samples(t.samples);
        r.runs = s.samples_ms.len();
        r.cut_short = !t.stable && t.out_of_time;
        r.p50_ms = Some(s.p50_ms);
        r.p90_ms = Some(s.p90_ms);
        r.p99_ms = Some(s.p99_ms);
        r.mean_ms = Some(s.mean_ms);
        r.throughput_ips = Some(config.batch.max(1) as f64 * 1e3 / s.mean_ms);
    }
    let mut plan = Plan {
        winner: None,
        winner_index: None,
        objective: config.objective,
        batch: config.batch.max(1),
        reference: reference.id().to_string(),
        budget_ms: config.budget.as_secs_f64() * 1e3,
        planning_ms: 0.0,
        candidates: reports,
    };
    if let Some(&w) = plan.ranking().first() {
        plan.winner = Some(plan.candidates[w].backend.clone());
        plan.winner_index = Some(w);
    }
    plan.planning_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(plan)
}

/// Every candidate compiled and run once on a fresh random input at `batch` against the
/// reference, not timed: what `accelbench verify` reports. `tolerance` replaces the
/// per-precision ones (it is absolute then).
pub fn verify(
    graph: &Graph,
    reference: &dyn Backend,
    candidates: &[Candidate],
    batch: usize,
    tolerance: Option<f64>,
) -> Result<Vec<CandidateReport>> {
    let inputs = random_inputs(graph, batch.max(1))?;
    let views: Vec<TensorView> = inputs.iter().map(|t| t.view()).collect();
    let config = PlanConfig {
        batch,
        ..PlanConfig::default()
    };
    Ok(check_all(graph, reference, candidates, &views, &config, tolerance)?.0)
}

/// The reference's outputs, then each candidate's check: its report, and the executables
/// of those that passed, to be timed.
fn check_all(
    graph: &Graph,
    reference: &dyn Backend,
    candidates: &[Candidate],
    views: &[TensorView],
    config: &PlanConfig,
    tolerance_override: Option<f64>,
) -> Result<(Vec<CandidateReport>, Vec<Timed>)> {
    let want = reference
        .compile(graph, &CompileOptions::default())
        .and_then(|exe| exe.run(views))
        .map_err(|e| {
            Error::Other(format!(
                "the reference backend {} cannot run this model: {e}",
                reference.id()
            ))
        })?;
    let scale = max_abs(&want).max(1.0);
    let mut reports = Vec::with_capacity(candidates.len());
    let mut timed: Vec<Timed> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        config.report(Progress::Checking {
            index: i,
            of: candidates.len(),
            label: c.label(),
        });
        let mut r = CandidateReport {
            backend: c.id().to_string(),
            device: c.backend.device().name,
            threads: c.options.threads,
            precision: c.options.precision.to_string(),
            status: Status::Ok,
            reason: None,
            init_ms: None,
            p50_ms: None,
            p90_ms: None,
            p99_ms: None,
            mean_ms: None,
            throughput_ips: None,
            runs: 0,
            cut_short: false,
            max_abs_diff: None,
            tolerance: tolerance_override.unwrap_or(tolerance(c.options.precision) * scale),
            memory_mb: None,
        };
        if let Some(why) = &c.skip {
            r.status = Status::Skipped;
            r.reason = Some(why.clone());
            reports.push(r);
            continue;
        }
        match check(c, graph, views, &want, config, &mut r) {
            Ok((exe, check_ms)) => timed.push(Timed::new(i, exe, check_ms)),
            Err(Verdict::Rejected(reason)) => {
                r.status = Status::Rejected;
                r.reason = Some(reason);
            }
            Err(Verdict::Failed(e)) => {
                r.status = Status::Failed;
                r.reason = Some(e.to_string());
            }
        }
        reports.push(r);
    }
    Ok((reports, timed))
}

enum Verdict {
    Rejected(String),
    Failed(Error),
}

impl From<Error> for Verdict {
    fn from(e: Error) -> Verdict {
        Verdict::Failed(e)
    }
}

/// Compiles a candidate, runs it once and holds it to the reference and the memory cap.
fn check(
    c: &Candidate,
    graph: &Graph,
    inputs: &[TensorView],
    want: &[Tensor],
    config: &PlanConfig,
    r: &mut CandidateReport,
) -> std::result::Result<(Box<dyn Executable>, f64), Verdict> {
    let rss0 = rss_bytes();
    let t = Instant::now();
    let exe = c.backend.compile(graph, &c.options)?;
    r.init_ms = Some(t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    let got = exe.run(inputs)?;
    let check_ms = t.elapsed().as_secs_f64() * 1e3;
    let memory = reported_bytes(&exe.memory()).or_else(|| {
        let (before, after) = (rss0?, rss_bytes()?);
        Some(after.saturating_sub(before))
    });
    r.memory_mb = memory.map(|b| b as f64 / (1u64 << 20) as f64);
    let diff = max_abs_diff(&got, want).ok_or_else(|| {
        Verdict::Rejected(format!(
            "its outputs do not line up with the {} reference's (count, size or type)",
            c.backend.id()
        ))
    })?;
    r.max_abs_diff = Some(diff);
    if diff.is_nan() || diff > r.tolerance {
        return Err(Verdict::Rejected(format!(
            "max abs diff {diff:.2e} from the reference exceeds the {} tolerance {:.0e}",
            c.options.precision, r.tolerance
        )));
    }
    if let (Some(cap), Some(bytes)) = (config.memory_cap, memory)
        && bytes > cap
    {
        return Err(Verdict::Rejected(format!(
            "holds {:.1} MB, over the memory cap of {:.1} MB",
            bytes as f64 / 1e6,
            cap as f64 / 1e6
        )));
    }
    Ok((exe, check_ms))
}

fn reported_bytes(m: &MemoryStats) -> Option<u64> {
    let parts = [m.weights, m.arena, m.scratch];
    parts
        .iter()
        .any(Option::is_some)
        .then(|| parts.iter().flatten().sum::<usize>() as u64)
}

/// A candidate being timed.
struct Timed {
    index: usize,
    exe: Box<dyn Executable>,
    /// The check's run, the first of this executable.
    check_ms: f64,
    samples: Vec<f64>,
    /// Time spent in timed runs.
    spent: Duration,
    stable: bool,
    /// Its share of the budget is spent.
    out_of_time: bool,
    failed: Option<Error>,
}

impl Timed {
    fn new(index: usize, exe: Box<dyn Executable>, check_ms: f64) -> Timed {
        Timed {
            index,
            exe,
            check_ms,
            samples: Vec::new(),
            spent: Duration::ZERO,
            stable: false,
            out_of_time: false,
            failed: None,
        }
    }

    fn done(&self) -> bool {
        self.stable || self.failed.is_some() || self.samples.len() >= MAX_RUNS
    }
}

/// The candidates take turns of a few runs each (so that a shared machine's slow spells fall
/// on all of them alike) until each median is stable or its share of the budget is spent.
/// Each gets an equal share at least, and what those that settled early leave is shared
/// among the rest. A candidate whose one checked run already took more than its share (a
/// software GPU, say) keeps that run as its only sample, so it costs no more time. The
/// others get one untimed run first: the check's run warmed caches, but some backends
/// finish setting up on the second.
fn take_turns(timed: &mut [Timed], inputs: &[TensorView], budget: Duration, config: &PlanConfig) {
    if timed.is_empty() {
        return;
    }
    let fair = budget / timed.len() as u32;
    for t in timed.iter_mut() {
        if t.check_ms > fair.as_secs_f64() * 1e3 {
            t.samples.push(t.check_ms);
            t.spent = fair;
            t.out_of_time = true;
        } else if let Err(e) = t.exe.run(inputs) {
            t.failed = Some(e);
        }
    }
    loop {
        let settled: Duration = timed
            .iter()
            .filter(|t| t.done() || t.out_of_time)
            .map(|t| t.spent)
            .sum();
        let running = timed.iter().filter(|t| !t.done() && !t.out_of_time).count();
        if running == 0 {
            break;
        }
        let share = fair.max(budget.saturating_sub(settled) / running as u32);
        for t in timed.iter_mut().filter(|t| !t.done() && !t.out_of_time) {
            for _ in 0..TURN {
                let at = Instant::now();
                let ran = t.exe.run(inputs);
                let took = at.elapsed();
                t.spent += took;
                match ran {
                    Ok(_) => t.samples.push(took.as_secs_f64() * 1e3),
                    Err(e) => {
                        t.failed = Some(e);
                        break;
                    }
                }
                if t.spent >= share {
                    break;
                }
            }
            t.stable = is_stable(&t.samples);
            t.out_of_time = t.spent >= share;
        }
        config.report(Progress::Timing {
            spent: timed.iter().map(|t| t.spent).sum(),
            budget,
        });
    }
}

fn median(s: &[f64]) -> f64 {
    let mut v = s.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Whether the first and second halves of the samples agree on the median.
fn is_stable(samples: &[f64]) -> bool {
    if samples.len() < MIN_RUNS {
        return false;
    }
    let half = samples.len() / 2;
    let (a, b) = (median(&samples[..half]), median(&samples[half..]));
    (a - b).abs() <= STABLE * median(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_median_is_stable_only_with_enough_agreeing_samples() {
        assert!(!is_stable(&[1.0; 5]));
        assert!(is_stable(&[1.0; 10]));
        let drifting: Vec<f64> = (0..20).map(|i| 1.0 + i as f64 * 0.05).collect();
        assert!(!is_stable(&drifting));
        let noisy: Vec<f64> = (0..20)
            .map(|i| if i % 2 == 0 { 1.0 } else { 1.02 })
            .collect();
        assert!(is_stable(&noisy));
    }

    fn report(status: Status, p50: f64, throughput: f64) -> CandidateReport {
        CandidateReport {
            backend: "b".into(),
            device: String::new(),
            threads: None,
            precision: "f32".into(),
            status,
            reason: None,
            init_ms: None,
            p50_ms: Some(p50),
            p90_ms: None,
            p99_ms: None,
            mean_ms: None,
            throughput_ips: Some(throughput),
            runs: 1,
            cut_short: false,
            max_abs_diff: Some(0.0),
            tolerance: 1e-4,
            memory_mb: None,
        }
    }

    #[test]
    fn ranking_keeps_passing_candidates_best_first_by_the_objective() {
        // Throughput is batch over the mean, so it may rank otherwise than the median.
        let mut p = Plan {
            winner: None,
            winner_index: None,
            objective: Objective::Latency,
            batch: 8,
            reference: "cpu".into(),
            budget_ms: 0.0,
            planning_ms: 0.0,
            candidates: vec![
                report(Status::Ok, 3.0, 300.0),
                report(Status::Rejected, 0.5, 9000.0),
                report(Status::Ok, 2.0, 250.0),
                report(Status::Failed, 0.1, 0.0),
                report(Status::Ok, 4.0, 400.0),
            ],
        };
        assert_eq!(p.ranking(), vec![2, 0, 4]);
        p.objective = Objective::Throughput;
        assert_eq!(p.ranking(), vec![4, 0, 2]);
    }

    #[test]
    fn objectives_parse_and_print() {
        for o in [Objective::Latency, Objective::Throughput] {
            assert_eq!(o.to_string().parse::<Objective>().unwrap(), o);
        }
        assert!("fast".parse::<Objective>().is_err());
    }
}
