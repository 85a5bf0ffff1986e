//! `accelbench bench`: in-process measurement of every requested backend on one input.

use crate::{print_json, progress, resolve_model, system, table};
use accel::{Error, Result, Session, Tensor, TensorView};
use accel_core::{CompileOptions, Graph, Precision, passes};
use accel_planner::inputs::{max_abs_diff, random_inputs};
use accel_planner::measure::measure;
use accel_planner::{Objective, PlanConfig};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX file or shipped model name (crnn, unet); repeat for several. Default: both shipped models.
    #[arg(long = "model")]
    pub(crate) models: Vec<String>,
    /// Backend id, or auto (the planner's choice, as a session gets it: planned or served
    /// from the plan cache at init); repeat for several. Default: cpu.
    #[arg(long = "backend")]
    pub(crate) backends: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    #[arg(long, default_value_t = 5)]
    pub(crate) warmup: usize,
    #[arg(long, default_value_t = 50)]
    pub(crate) iters: usize,
    /// Timed runs are split into this many rounds, the backends taking turns round by round,
    /// so that a shared machine's slow spells fall on every backend alike. Default: 10 when
    /// several backends are measured, else 1.
    #[arg(long)]
    pub(crate) rounds: Option<usize>,
    /// Backend whose outputs define max_abs_diff (always run in f32).
    #[arg(long, default_value = "cpu")]
    pub(crate) reference: String,
    /// Precision: f32, or f16 (the cpu backend keeps its packed weights as f16; wgpu stores
    /// weights and activations as f16 and computes in f32, where the adapter has
    /// SHADER_F16; other backends report it unsupported).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
    pub(crate) precision: String,
    /// Time every kernel (GPU backends with timestamp queries; a compute pass per kernel)
    /// and list each backend's slowest nodes after the table.
    #[arg(long)]
    pub(crate) profile: bool,
    /// Stop a backend's timed runs once they took this many seconds (after one at least);
    /// its row says how many ran. Default: no limit.
    #[arg(long)]
    pub(crate) budget_s: Option<f64>,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Serialize, Default)]
pub struct BenchResult {
    pub(crate) backend: String,
    pub(crate) device: String,
    pub(crate) batch: usize,
    pub(crate) threads: Option<usize>,
    pub(crate) precision: String,
    pub(crate) status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    pub(crate) init_ms: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p90_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) throughput_ips: Option<f64>,
    pub(crate) peak_mem_mb: Option<f64>,
    /// Backend-reported bytes: packed weights, the planned activation arena, kernel scratch.
    pub(crate) weights_mb: Option<f64>,
    pub(crate) arena_mb: Option<f64>,
    pub(crate) scratch_mb: Option<f64>,
    pub(crate) energy_mj: Option<f64>,
    pub(crate) max_abs_diff: Option<f64>,
    /// Median device time of the timed runs' kernels (GPU timestamp queries), beside the
    /// wall-clock p50.
    pub(crate) kernel_p50_ms: Option<f64>,
    /// With --profile: the last run's kernel time per node, slowest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) kernels: Vec<NodeTimeRow>,
    /// p50 over the reference backend's p50, when the reference was measured too.
    pub(crate) ratio_to_reference: Option<f64>,
    pub(crate) iters: usize,
    pub(crate) rounds: usize,
    /// The timed runs, for `compare --plot`.
    #[serde(skip)]
    pub(crate) samples_ms: Vec<f64>,
}

impl BenchResult {
    /// The backend as people read it: `auto` with what its plan chose.
    pub(crate) fn label(&self) -> String {
        if self.backend == "auto" && self.status == "ok" {
            let chosen = self.device.split_whitespace().next().unwrap_or("?");
            format!("auto ({chosen})")
        } else {
            self.backend.clone()
        }
    }
}

#[derive(Serialize, Clone)]
pub struct NodeTimeRow {
    node: String,
    op: String,
    ms: f64,
}

#[derive(Serialize)]
pub struct ModelReport {
    pub(crate) model: String,
    pub(crate) results: Vec<BenchResult>,
}

/// A backend compiled, checked against the reference and warmed up, waiting for its rounds.
struct Prepared {
    result: BenchResult,
    /// Seconds of timed runs so far.
    spent_s: f64,
    session: Session,
    samples_ms: Vec<f64>,
    kernel_ms: Vec<f64>,
    energy_uj: Option<u64>,
}

/// A backend of the comparison: ready for its timed rounds, or already its final row (one
/// that cannot run, or whose runs failed).
enum Slot {
    Ready(Prepared),
    Done(BenchResult),
}

/// Compiles `id`, runs it once against the reference and warms it up.
fn prepare(
    a: &Args,
    graph: &Graph,
    model_sha256: &str,
    id: &str,
    inputs: &[Tensor],
    reference: Option<&[Tensor]>,
) -> Slot {
    let mut r = BenchResult {
        backend: id.to_string(),
        batch: a.batch,
        threads: a.threads,
        precision: a.precision.clone(),
        iters: 0,
        ..Default::default()
    };
    let fail = |mut r: BenchResult, status: &str, e: Error| {
        r.status = status.into();
        r.reason = Some(match e {
            Error::BackendUnavailable { reason, .. } => reason,
            other => other.to_string(),
        });
        r
    };
    // `auto` is a session like the app gets: planned (or the cached plan) at compile, its
    // threads and precision the plan's.
    let auto = id == "auto";
    if !auto {
        match accel::available_backend(id) {
            Ok(b) => r.device = b.device().name,
            Err(e) => return Slot::Done(fail(r, "unavailable", e)),
        }
    }
    let precision = if a.precision == "f16" {
        if id != "cpu" && !id.starts_with("wgpu") {
            r.status = "unsupported".into();
            r.reason = Some("f16 is implemented by the cpu and wgpu backends only".into());
            return Slot::Done(r);
        }
        Precision::F16
    } else {
        Precision::F32
    };
    system::reset_peak_rss();
    let rss0 = system::rss_mb();
    let t0 = std::time::Instant::now();
    let mut builder = Session::builder().backend(id).options(CompileOptions {
        threads: a.threads,
        precision,
        profile: a.profile,
    });
    if auto {
        builder = builder
            .model_hash(model_sha256.to_string())
            .plan_config(PlanConfig {
                objective: if a.batch > 1 {
                    Objective::Throughput
                } else {
                    Objective::Latency
                },
                batch: a.batch,
                ..PlanConfig::default()
            });
    }
    let session = match builder.compile(graph.clone()) {
        Ok(s) => s,
        Err(e) => return Slot::Done(fail(r, "error", e)),
    };
    r.init_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
    if let Some(plan) = session.plan() {
        let w = plan.winner_index.map(|i| &plan.candidates[i]);
        r.device = format!(
            "{} ({})",
            session.backend(),
            w.map_or("", |w| w.device.as_str())
        );
        r.threads = w.and_then(|w| w.threads);
        r.precision = w.map_or(r.precision.clone(), |w| w.precision.clone());
    }
    let views: Vec<TensorView> = inputs.iter().map(|t| t.view()).collect();
    let first = match session.run(&views) {
        Ok(o) => o,
        Err(e) => return Slot::Done(fail(r, "error", e)),
    };
    r.max_abs_diff = reference.map_or(Some(0.0), |re| max_abs_diff(&first, re));
    // Warm-up within the time budget too: one slow run is warm-up enough.
    let warm = std::time::Instant::now();
    for _ in 0..a.warmup {
        if a.budget_s
            .is_some_and(|b| warm.elapsed().as_secs_f64() >= b)
        {
            break;
        }
        if let Err(e) = session.run(&views) {
            return Slot::Done(fail(r, "error", e));
        }
    }
    // Peak memory of compiling, planning and running once; later runs reuse it.
    r.peak_mem_mb = match (system::peak_rss_mb(), rss0) {
        (Some(p), Some(s)) => Some((p - s).max(0.0)),
        _ => None,
    };
    Slot::Ready(Prepared {
        result: r,
        session,
        spent_s: 0.0,
        samples_ms: Vec::with_capacity(a.iters),
        kernel_ms: Vec::new(),
        energy_uj: Some(0),
    })
}

/// One round's share of timed runs for `p`, its energy added to the backend's count.
fn time_round(
    p: &mut Prepared,
    inputs: &[Tensor],
    runs: usize,
    budget_s: Option<f64>,
) -> Result<()> {
    let views: Vec<TensorView> = inputs.iter().map(|t| t.view()).collect();
    let e0 = system::energy_uj();
    let (session, kernel_ms) = (&p.session, &mut p.kernel_ms);
    let left = budget_s.map(|b| std::time::Duration::from_secs_f64((b - p.spent_s).max(0.0)));
    let (stats, _) = measure(0, runs, left, || {
        session.run(&views)?;
        if let Some(k) = session.last_kernel_profile() {
            kernel_ms.push(k.total_ms);
        }
        Ok(())
    })?;
    let e1 = system::energy_uj();
    p.energy_uj = match (p.energy_uj, e0, e1) {
        (Some(sum), Some(x), Some(y)) if y >= x => Some(sum + (y - x)),
        _ => None,
    };
    p.spent_s += stats.samples_ms.iter().sum::<f64>() / 1e3;
    p.samples_ms.extend(stats.samples_ms);
    Ok(())
}

/// The finished row of a measured backend.
fn finish(a: &Args, p: Prepared, rounds: usize) -> BenchResult {
    let mut r = p.result;
    let stats = accel_planner::measure::LatencyStats::from_samples(p.samples_ms);
    r.samples_ms = stats.samples_ms.clone();
    r.iters = stats.samples_ms.len();
    r.rounds = rounds;
    r.status = "ok".into();
    r.p50_ms = Some(stats.p50_ms);
    r.p90_ms = Some(stats.p90_ms);
    r.p99_ms = Some(stats.p99_ms);
    r.throughput_ips = Some(a.batch as f64 * 1e3 / stats.p50_ms);
    if !p.kernel_ms.is_empty() {
        let k = accel_planner::measure::LatencyStats::from_samples(p.kernel_ms);
        r.kernel_p50_ms = Some(k.p50_ms);
    }
    if let Some(profile) = p.session.last_kernel_profile() {
        let mut nodes: Vec<NodeTimeRow> = profile
            .nodes
            .into_iter()
            .map(|n| NodeTimeRow {
                node: n.node,
                op: n.op,
                ms: n.ms,
            })
            .collect();
        nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        r.kernels = nodes;
    }
    let mem = p.session.memory();
    let mb = |b: Option<usize>| b.map(|b| b as f64 / (1024.0 * 1024.0));
    (r.weights_mb, r.arena_mb, r.scratch_mb) = (mb(mem.weights), mb(mem.arena), mb(mem.scratch));
    // Energy of the timed runs only, per image.
    r.energy_mj = p
        .energy_uj
        .filter(|_| r.iters > 0)
        .map(|uj| uj as f64 / 1e3 / (r.iters * a.batch) as f64);
    r
}

/// Every backend of one model: prepared one after another, then timed in turns.
fn bench_model(
    a: &Args,
    graph: &Graph,
    model_sha256: &str,
    inputs: &[Tensor],
    reference: Option<&[Tensor]>,
    bar: &indicatif::ProgressBar,
) -> Vec<BenchResult> {
    let mut slots: Vec<Slot> = a
        .backends
        .iter()
        .map(|id| {
            bar.set_message(format!("preparing {id}"));
            let slot = prepare(a, graph, model_sha256, id, inputs, reference);
            bar.inc(1);
            slot
        })
        .collect();
    let measured = slots.iter().filter(|s| matches!(s, Slot::Ready(_))).count();
    let iters = a.iters.max(1);
    let rounds = a
        .rounds
        .unwrap_or(if measured > 1 { 10 } else { 1 })
        .clamp(1, iters);
    for round in 0..rounds {
        bar.set_message(format!("round {}/{rounds}", round + 1));
        // Runs of this round: the timed runs spread evenly over the rounds.
        let runs = iters * (round + 1) / rounds - iters * round / rounds;
        for slot in slots.iter_mut() {
            let Slot::Ready(p) = slot else { continue };
            if a.budget_s.is_some_and(|b| p.spent_s >= b) {
                continue;
            }
            if measured > 1 {
                // Another runtime's pool may still spin after its turn (ONNX Runtime's does
                // by default); let it fall asleep, then warm this backend up again.
                std::thread::sleep(std::time::Duration::from_millis(20));
                let views: Vec<TensorView> = inputs.iter().map(|t| t.view()).collect();
                if let Err(e) = p.session.run(&views) {
                    *slot = Slot::Done(failed(p, e));
                    continue;
                }
            }
            if let Err(e) = time_round(p, inputs, runs, a.budget_s) {
                *slot = Slot::Done(failed(p, e));
            }
        }
    }
    let mut results: Vec<BenchResult> = slots
        .into_iter()
        .map(|s| match s {
            Slot::Ready(p) => finish(a, p, rounds),
            Slot::Done(r) => r,
        })
        .collect();
    let ref_p50 = results
        .iter()
        .find(|r| r.backend == a.reference && r.status == "ok")
        .and_then(|r| r.p50_ms);
    for r in &mut results {
        r.ratio_to_reference = r.p50_ms.zip(ref_p50).map(|(p, q)| p / q);
    }
    results
}

/// The row of a backend whose timed runs failed.
fn failed(p: &Prepared, e: Error) -> BenchResult {
    BenchResult {
        status: "error".into(),
        reason: Some(e.to_string()),
        backend: p.result.backend.clone(),
        device: p.result.device.clone(),
        batch: p.result.batch,
        threads: p.result.threads,
        precision: p.result.precision.clone(),
        ..Default::default()
    }
}

pub fn run(mut a: Args) -> Result<()> {
    if a.models.is_empty() {
        a.models = vec!["crnn".into(), "unet".into()];
    }
    if a.backends.is_empty() {
        a.backends = vec!["cpu".into()];
    }
    if a.batch == 0 {
        return Err(Error::Other("--batch must be at least 1".into()));
    }
    let reports = measure_models(&a)?;
    if a.json {
        return if reports.len() == 1 {
            print_json(&reports[0])
        } else {
            print_json(&reports)
        };
    }
    print_reports(&a, &reports);
    Ok(())
}

/// Every model of `a` on every backend of `a`.
pub(crate) fn measure_models(a: &Args) -> Result<Vec<ModelReport>> {
    let mut reports = Vec::new();
    let bar = progress::bar(
        (a.models.len() * a.backends.len()) as u64,
        &format!("bench, batch {}", a.batch),
    );
    for m in &a.models {
        let path = resolve_model(m)?;
        let mut graph = accel_core::onnx::load_model(&path)?;
        passes::optimize(&mut graph)?;
        let inputs = random_inputs(&graph, a.batch)?;
        let reference = accel::Session::builder()
            .backend(&a.reference)
            .compile(graph.clone())
            .and_then(|s| s.run(&inputs.iter().map(|t| t.view()).collect::<Vec<_>>()))
            .ok();
        let sha = accel_planner::sha256_file(&path)?;
        let results = bench_model(a, &graph, &sha, &inputs, reference.as_deref(), &bar);
        reports.push(ModelReport {
            model: path.display().to_string(),
            results,
        });
    }
    bar.finish_and_clear();
    Ok(reports)
}

/// The table people read, and what its columns and failures mean.
pub(crate) fn print_reports(a: &Args, reports: &[ModelReport]) {
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or("-".to_string(), f);
    let mut rows = Vec::new();
    for rep in reports {
        let model = std::path::Path::new(&rep.model)
            .file_name()
            .map_or(rep.model.clone(), |f| f.to_string_lossy().into_owned());
        for r in &rep.results {
            if r.status != "ok" {
                let mut row = vec![
                    model.clone(),
                    r.label(),
                    r.status.clone(),
                    r.batch.to_string(),
                ];
                row.extend(std::iter::repeat_n("-".to_string(), 11));
                rows.push(row);
                continue;
            }
            rows.push(vec![
                model.clone(),
                r.label(),
                r.status.clone(),
                r.batch.to_string(),
                opt(r.init_ms, table::ms),
                opt(r.p50_ms, table::ms),
                opt(r.ratio_to_reference, |v| format!("{v:.2}x")),
                opt(r.kernel_p50_ms, table::ms),
                opt(r.p90_ms, table::ms),
                opt(r.p99_ms, table::ms),
                opt(r.throughput_ips, |v| format!("{v:.1}")),
                opt(r.peak_mem_mb, |v| format!("{v:.1}")),
                opt(r.arena_mb, |v| format!("{v:.2}")),
                opt(r.energy_mj, |v| format!("{v:.2}")),
                opt(r.max_abs_diff, |v| format!("{v:.1e}")),
            ]);
        }
    }
    let headers = [
        "model",
        "backend",
        "status",
        "batch",
        "init ms",
        "p50 ms",
        "vs ref",
        "kernel ms",
        "p90 ms",
        "p99 ms",
        "img/s",
        "peak MB",
        "arena MB",
        "mJ/img",
        "max|diff|",
    ];
    println!("{}", table::render(&headers, &rows));
    let rounds = reports
        .iter()
        .flat_map(|rep| &rep.results)
        .find(|r| r.status == "ok")
        .map_or(1, |r| r.rounds);
    if reports
        .iter()
        .flat_map(|rep| &rep.results)
        .any(|r| r.ratio_to_reference.is_some())
    {
        println!(
            "vs ref: p50 over {}'s p50; timed runs in {rounds} round(s), backends taking turns",
            a.reference
        );
    }
    match a.threads {
        Some(t) => println!("threads per run: {t} (--threads), for every backend"),
        None => println!("threads per run: each backend's default"),
    }
    let mut explained = Vec::new();
    for r in reports
        .iter()
        .flat_map(|rep| &rep.results)
        .filter(|r| r.status != "ok")
    {
        if !explained.contains(&&r.backend) {
            explained.push(&r.backend);
            println!(
                "{}: {}: {}",
                r.backend,
                r.status,
                r.reason.as_deref().unwrap_or("")
            );
        }
    }
    let mut seen = Vec::new();
    for r in reports
        .iter()
        .flat_map(|rep| &rep.results)
        .filter(|r| r.status == "ok")
    {
        if !seen.contains(&&r.backend) {
            seen.push(&r.backend);
            println!("{}: {}", r.backend, r.device);
        }
    }
    if reports
        .iter()
        .flat_map(|rep| &rep.results)
        .any(|r| r.kernel_p50_ms.is_some())
    {
        println!("kernel ms: median device time of a run's kernels (GPU timestamp queries)");
    }
    if a.profile {
        print_profiles(reports);
    }
}

/// --profile: each measured backend's slowest nodes in its last run, or why there are none.
fn print_profiles(reports: &[ModelReport]) {
    const SHOWN: usize = 12;
    for rep in reports {
        for r in rep.results.iter().filter(|r| r.status == "ok") {
            println!();
            if r.kernels.is_empty() {
                println!(
                    "{} on {}: no per-kernel times (the backend has no device timestamps)",
                    rep.model, r.backend
                );
                continue;
            }
            let total: f64 = r.kernels.iter().map(|k| k.ms).sum();
            println!(
                "{} on {}: {} nodes, {:.3} ms of kernels; the slowest:",
                rep.model,
                r.backend,
                r.kernels.len(),
                total
            );
            let rows: Vec<Vec<String>> = r
                .kernels
                .iter()
                .take(SHOWN)
                .map(|k| {
                    vec![
                        table::ms(k.ms),
                        format!("{:.1}%", 100.0 * k.ms / total.max(1e-12)),
                        k.op.clone(),
                        k.node.clone(),
                    ]
                })
                .collect();
            println!("{}", table::render(&["ms", "share", "op", "node"], &rows));
        }
    }
}
