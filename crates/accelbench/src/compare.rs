//! `accelbench compare`: the project's main job. With no arguments: both shipped models,
//! `auto` and every available backend, batch 1 and 8, measured as `bench` does (backends
//! taking turns in rounds, in one process), as a table, JSON, CSV, or an SVG figure.

use crate::bench::{self, BenchResult, ModelReport};
use crate::{plot, print_json};
use accel::{Error, Result};
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX file or shipped model name; repeat for several. Default: crnn and unet.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
    batch: Vec<usize>,
    /// Backend id (or auto); repeat for several. Default: auto and every available backend.
    #[arg(long = "backend")]
    backends: Vec<String>,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    #[arg(long, default_value_t = 40)]
    iters: usize,
    /// Seconds of timed runs per backend and cell at most (after one run at least), so a
    /// slow backend (a software GPU) does not hold the comparison up.
    #[arg(long, default_value_t = 3.0)]
    budget_s: f64,
    /// Print one JSON document.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV: one row per model, batch and backend.
    #[arg(long)]
    csv: bool,
    /// Also draw latency distributions and throughput per backend into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// One row of the comparison: a model's result on one backend at one batch.
#[derive(Serialize)]
pub(crate) struct Row<'a> {
    pub model: String,
    #[serde(flatten)]
    pub result: &'a BenchResult,
}

/// The flat shape CSV readers want.
#[derive(Serialize)]
struct CsvRow<'a> {
    model: &'a str,
    backend: &'a str,
    device: &'a str,
    batch: usize,
    threads: Option<usize>,
    precision: &'a str,
    status: &'a str,
    init_ms: Option<f64>,
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p99_ms: Option<f64>,
    throughput_ips: Option<f64>,
    peak_mem_mb: Option<f64>,
    energy_mj: Option<f64>,
    max_abs_diff: Option<f64>,
    ratio_to_reference: Option<f64>,
    iters: usize,
    reason: &'a str,
}

fn short_name(model: &str) -> String {
    std::path::Path::new(model)
        .file_name()
        .map_or(model.to_string(), |f| f.to_string_lossy().into_owned())
}

pub fn run(a: Args) -> Result<()> {
    if a.batch.contains(&0) {
        return Err(Error::Other("--batch sizes must be at least 1".into()));
    }
    let backends = if a.backends.is_empty() {
        std::iter::once("auto".to_string())
            .chain(
                accel::probe_backends()
                    .into_iter()
                    .filter(|e| e.backend.is_ok())
                    .map(|e| e.id),
            )
            .collect()
    } else {
        a.backends.clone()
    };
    let args = |batch: usize| bench::Args {
        models: if a.models.is_empty() {
            vec!["crnn".into(), "unet".into()]
        } else {
            a.models.clone()
        },
        backends: backends.clone(),
        batch,
        threads: a.threads,
        warmup: a.warmup,
        iters: a.iters,
        rounds: None,
        reference: "cpu".into(),
        precision: "f32".into(),
        profile: false,
        json: false,
        budget_s: Some(a.budget_s),
    };
    let mut reports: Vec<ModelReport> = Vec::new();
    for &batch in &a.batch {
        reports.extend(bench::measure_models(&args(batch))?);
    }
    // Model by model, batches in order.
    reports.sort_by(|x, y| x.model.cmp(&y.model));
    let rows: Vec<Row> = reports
        .iter()
        .flat_map(|rep| {
            rep.results.iter().map(|r| Row {
                model: short_name(&rep.model),
                result: r,
            })
        })
        .collect();
    if let Some(path) = &a.plot {
        plot::draw(path, &rows)?;
    }
    if a.json {
        print_json(&serde_json::json!({ "results": rows }))
    } else if a.csv {
        print_csv(&rows)
    } else {
        bench::print_reports(&args(1), &reports);
        if let Some(p) = &a.plot {
            println!("plot: {}", p.display());
        }
        Ok(())
    }
}

fn print_csv(rows: &[Row]) -> Result<()> {
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    let fail = |e: csv::Error| Error::Other(format!("cannot write CSV: {e}"));
    for row in rows {
        let r = row.result;
        w.serialize(CsvRow {
            model: &row.model,
            backend: &r.backend,
            device: &r.device,
            batch: r.batch,
            threads: r.threads,
            precision: &r.precision,
            status: &r.status,
            init_ms: r.init_ms,
            p50_ms: r.p50_ms,
            p90_ms: r.p90_ms,
            p99_ms: r.p99_ms,
            throughput_ips: r.throughput_ips,
            peak_mem_mb: r.peak_mem_mb,
            energy_mj: r.energy_mj,
            max_abs_diff: r.max_abs_diff,
            ratio_to_reference: r.ratio_to_reference,
            iters: r.iters,
            reason: r.reason.as_deref().unwrap_or(""),
        })
        .map_err(fail)?;
    }
    w.flush().map_err(|e| Error::io("stdout", e))
}
