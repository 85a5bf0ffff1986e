//! `accelbench plan`: what `auto` would run a model on here, with every candidate's numbers
//! or the reason it lost, served from the plan cache when nothing it depends on changed.

use crate::{print_json, progress, resolve_model, table};
use accel::{CacheStatus, Objective, Plan, PlanCache, PlanConfig, Result};
use accel_planner::{Status, plan_cached, sha256_file};
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// ONNX file or shipped model name (crnn, unet).
    #[arg(long)]
    model: String,
    #[arg(long, default_value = "latency", value_parser = ["latency", "throughput"])]
    objective: String,
    /// Batch the candidates are checked and timed at. Default: 1 for latency, 8 for
    /// throughput.
    #[arg(long)]
    batch: Option<usize>,
    /// Only these backends' candidates (repeat for several). Default: every available one.
    #[arg(long = "backend")]
    backends: Vec<String>,
    /// Wall time for the whole plan in milliseconds: compiling and checking, then timing in
    /// what is left (at least a quarter).
    #[arg(long, default_value_t = accel_planner::DEFAULT_BUDGET_MS)]
    budget_ms: u64,
    /// Reject candidates whose compiled model holds more than this many MB.
    #[arg(long)]
    memory_cap_mb: Option<f64>,
    /// Plan afresh and leave the cache alone.
    #[arg(long)]
    no_cache: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    model: String,
    winner: Option<&'a str>,
    winner_threads: Option<usize>,
    winner_precision: Option<&'a str>,
    objective: Objective,
    batch: usize,
    cache: CacheStatus,
    /// This command's planning time: a cache hit's lookup, or the whole plan.
    elapsed_ms: f64,
    #[serde(flatten)]
    plan: &'a Plan,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

pub fn run(a: Args) -> Result<()> {
    let path = resolve_model(&a.model)?;
    let objective: Objective = a.objective.parse()?;
    let config = PlanConfig {
        objective,
        batch: a.batch.unwrap_or(match objective {
            Objective::Latency => 1,
            Objective::Throughput => 8,
        }),
        budget: Duration::from_millis(a.budget_ms),
        memory_cap: a.memory_cap_mb.map(|mb| (mb * 1e6) as u64),
        progress: None,
    };
    let bar = progress::bar(1, "plan");
    let config = PlanConfig {
        progress: Some(progress::planning(&bar)),
        ..config
    };
    let start = Instant::now();
    let graph = accel_core::load_optimized(&path)?;
    let sha = sha256_file(&path)?;
    let candidates = if a.backends.is_empty() {
        accel::default_candidates()
    } else {
        accel::candidates_of(&a.backends)?
    };
    let reference = accel::available_backend("cpu")?;
    let cache = if a.no_cache {
        None
    } else {
        PlanCache::default_location()
    };
    let planned = plan_cached(
        &graph,
        Some(&sha),
        &*reference,
        &candidates,
        &config,
        cache.as_ref(),
    )?;
    bar.finish_and_clear();
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    for w in &planned.warnings {
        eprintln!("warning: {w}");
    }
    let plan = &planned.plan;
    let winner = plan.winner_index.map(|i| &plan.candidates[i]);
    let report = Report {
        model: path.display().to_string(),
        winner: plan.winner.as_deref(),
        winner_threads: winner.and_then(|w| w.threads),
        winner_precision: winner.map(|w| w.precision.as_str()),
        objective,
        batch: plan.batch,
        cache: planned.cache,
        elapsed_ms,
        plan,
        warnings: planned.warnings.clone(),
    };
    if a.json {
        return print_json(&report);
    }
    print_table(&report);
    Ok(())
}

fn print_table(r: &Report) {
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or("-".to_string(), f);
    let rows: Vec<Vec<String>> = r
        .plan
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            vec![
                if Some(i) == r.plan.winner_index {
                    format!("* {}", c.backend)
                } else {
                    format!("  {}", c.backend)
                },
                c.threads.map_or("-".into(), |t| t.to_string()),
                c.precision.clone(),
                if c.status == Status::Ok && c.cut_short {
                    "ok (cut short)".into()
                } else {
                    c.status.as_str().into()
                },
                opt(c.init_ms, table::ms),
                opt(c.p50_ms, table::ms),
                opt(c.p90_ms, table::ms),
                opt(c.throughput_ips, |v| format!("{v:.1}")),
                opt(c.max_abs_diff, |v| format!("{v:.1e}")),
                c.runs.to_string(),
                c.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    println!(
        "{} ({}, batch {}, reference {})",
        r.model, r.objective, r.batch, r.plan.reference
    );
    println!(
        "{}",
        table::render(
            &[
                "backend",
                "threads",
                "precision",
                "status",
                "init ms",
                "p50 ms",
                "p90 ms",
                "img/s",
                "max diff",
                "runs",
                "reason",
            ],
            &rows
        )
    );
    let cache = match r.cache {
        CacheStatus::Hit => "from the cache",
        CacheStatus::Miss => "planned and cached",
        CacheStatus::Off => "planned, not cached",
    };
    let options = match (r.winner_threads, r.winner_precision) {
        (Some(t), Some(p)) => format!(", {t} threads, {p}"),
        (None, Some(p)) => format!(", {p}"),
        _ => String::new(),
    };
    match r.winner {
        Some(w) => println!("winner: {w}{options} ({cache} in {:.0} ms)", r.elapsed_ms),
        None => println!("no candidate passed ({cache} in {:.0} ms)", r.elapsed_ms),
    }
}
