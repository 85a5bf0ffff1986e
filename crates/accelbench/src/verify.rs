//! `accelbench verify`: every backend (with each option the planner would try) run once on a
//! fresh random input against the cpu reference; exits 1 if any disagrees or fails.

use crate::{print_json, resolve_model, table};
use accel::Result;
use accel_planner::CandidateReport;
use serde::Serialize;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX file or shipped model name (crnn, unet).
    #[arg(long)]
    model: String,
    /// Backend id; repeat for several. Default: every available backend (software GPU
    /// adapters included).
    #[arg(long = "backend")]
    backends: Vec<String>,
    /// Largest max abs difference allowed. Default: 1e-4 (f32) or 1e-2 (f16) times
    /// max(1, the reference outputs' largest magnitude).
    #[arg(long)]
    tolerance: Option<f64>,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    backend: String,
    threads: Option<usize>,
    precision: String,
    /// ok, rejected, failed or unavailable.
    status: String,
    max_abs_diff: Option<f64>,
    tolerance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Serialize)]
struct Report {
    model: String,
    batch: usize,
    reference: &'static str,
    passed: bool,
    results: Vec<Row>,
}

fn row(c: CandidateReport) -> Row {
    Row {
        backend: c.backend,
        threads: c.threads,
        precision: c.precision,
        status: c.status.as_str().into(),
        max_abs_diff: c.max_abs_diff,
        tolerance: Some(c.tolerance),
        reason: c.reason,
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    let path = resolve_model(&a.model)?;
    let graph = accel_core::load_optimized(&path)?;
    let mut rows = Vec::new();
    let ids: Vec<String> = if a.backends.is_empty() {
        let mut ids = Vec::new();
        for e in accel::probe_backends() {
            match e.backend {
                Ok(_) => ids.push(e.id),
                Err(reason) => rows.push(Row {
                    backend: e.id,
                    threads: None,
                    precision: "-".into(),
                    status: "unavailable".into(),
                    max_abs_diff: None,
                    tolerance: None,
                    reason: Some(reason),
                }),
            }
        }
        ids
    } else {
        a.backends.clone()
    };
    let candidates = accel::candidates_of(&ids)?;
    let reference = accel::available_backend("cpu")?;
    let checked = accel_planner::verify(&graph, &*reference, &candidates, a.batch, a.tolerance)?;
    let mut results: Vec<Row> = checked.into_iter().map(row).collect();
    results.extend(rows);
    let passed = results
        .iter()
        .all(|r| r.status != "rejected" && r.status != "failed");
    let report = Report {
        model: path.display().to_string(),
        batch: a.batch.max(1),
        reference: "cpu",
        passed,
        results,
    };
    if a.json {
        print_json(&report)?;
    } else {
        print_table(&report);
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(r: &Report) {
    let rows: Vec<Vec<String>> = r
        .results
        .iter()
        .map(|x| {
            vec![
                x.backend.clone(),
                x.threads.map_or("-".into(), |t| t.to_string()),
                x.precision.clone(),
                x.status.clone(),
                x.max_abs_diff.map_or("-".into(), |v| format!("{v:.1e}")),
                x.tolerance.map_or("-".into(), |v| format!("{v:.0e}")),
                x.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    println!(
        "{} (batch {}, against the {} backend)",
        r.model, r.batch, r.reference
    );
    println!(
        "{}",
        table::render(
            &[
                "backend",
                "threads",
                "precision",
                "status",
                "max diff",
                "tolerance",
                "reason"
            ],
            &rows
        )
    );
    println!(
        "{}",
        if r.passed {
            "every backend that ran agrees"
        } else {
            "some backend disagrees or failed"
        }
    );
}
