//! `accelbench bench`: in-process measurement of every requested backend on one input.

use crate::{print_json, resolve_model, system, table};
use accel::{Error, Result, Session, Tensor, TensorView};
use accel_core::ir::Dim;
use accel_core::{CompileOptions, DType, Graph, Precision, passes};
use accel_planner::measure::measure;
use rand::RngExt;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX file or shipped model name (crnn, unet); repeat for several. Default: both shipped models.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Backend id; repeat for several. Default: cpu.
    #[arg(long = "backend")]
    backends: Vec<String>,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    #[arg(long, default_value_t = 50)]
    iters: usize,
    /// Backend whose outputs define max_abs_diff (always run in f32).
    #[arg(long, default_value = "cpu")]
    reference: String,
    /// Weight precision: f32, or f16 (the cpu backend keeps its packed weights as f16;
    /// other backends report it unsupported).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
    precision: String,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Default)]
pub struct BenchResult {
    backend: String,
    device: String,
    batch: usize,
    threads: Option<usize>,
    precision: String,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    init_ms: Option<f64>,
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p99_ms: Option<f64>,
    throughput_ips: Option<f64>,
    peak_mem_mb: Option<f64>,
    /// Backend-reported bytes: packed weights, the planned activation arena, kernel scratch.
    weights_mb: Option<f64>,
    arena_mb: Option<f64>,
    scratch_mb: Option<f64>,
    energy_mj: Option<f64>,
    max_abs_diff: Option<f64>,
    iters: usize,
}

#[derive(Serialize)]
pub struct ModelReport {
    model: String,
    results: Vec<BenchResult>,
}

/// A random input for every graph input, the batch dimension set to `batch`.
fn random_inputs(graph: &Graph, batch: usize) -> Result<Vec<Tensor>> {
    let mut rng = rand::rng();
    graph
        .inputs
        .iter()
        .map(|vi| {
            let dims = vi.shape.as_ref().ok_or_else(|| {
                Error::Other(format!("input '{}' has no declared shape", vi.name))
            })?;
            let shape: Vec<usize> = dims
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Known(n) if i == 0 && *n != batch => Err(Error::Other(format!(
                        "input '{}' has a fixed batch of {n}; use --batch {n}",
                        vi.name
                    ))),
                    Dim::Known(n) => Ok(*n),
                    Dim::Sym(_) if i == 0 => Ok(batch),
                    Dim::Sym(s) => Err(Error::Other(format!(
                        "input '{}' has a free dimension '{s}' besides the batch",
                        vi.name
                    ))),
                })
                .collect::<Result<_>>()?;
            let n: usize = shape.iter().product();
            match vi.dtype {
                DType::F32 => Tensor::from_vec(
                    shape,
                    (0..n).map(|_| rng.random::<f32>()).collect::<Vec<_>>(),
                ),
                other => Err(Error::Other(format!(
                    "bench makes random inputs for f32 only; input '{}' is {other}",
                    vi.name
                ))),
            }
        })
        .collect()
}

fn max_abs_diff(a: &[Tensor], b: &[Tensor]) -> Option<f64> {
    let mut m = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let (xv, yv) = (x.to_f32_vec().ok()?, y.to_f32_vec().ok()?);
        if xv.len() != yv.len() {
            return None;
        }
        for (p, q) in xv.iter().zip(&yv) {
            let d = (*p as f64 - *q as f64).abs();
            if d.is_nan() {
                return Some(f64::NAN);
            }
            m = m.max(d);
        }
    }
    Some(m)
}

fn bench_backend(
    a: &Args,
    graph: &Graph,
    id: &str,
    inputs: &[Tensor],
    reference: Option<&[Tensor]>,
) -> BenchResult {
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
    let backend = match accel::available_backend(id) {
        Ok(b) => b,
        Err(e) => return fail(r, "unavailable", e),
    };
    let precision = if a.precision == "f16" {
        if id != "cpu" {
            r.status = "unsupported".into();
            r.reason = Some("f16 weights are implemented by the cpu backend only".into());
            return r;
        }
        Precision::F16
    } else {
        Precision::F32
    };
    r.device = backend.device().name;
    system::reset_peak_rss();
    let rss0 = system::rss_mb();
    let t0 = std::time::Instant::now();
    let builder = Session::builder().backend(id).options(CompileOptions {
        threads: a.threads,
        precision,
    });
    let session = match builder.compile(graph.clone()) {
        Ok(s) => s,
        Err(e) => return fail(r, "error", e),
    };
    r.init_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
    let views: Vec<TensorView> = inputs.iter().map(|t| t.view()).collect();
    let first = match session.run(&views) {
        Ok(o) => o,
        Err(e) => return fail(r, "error", e),
    };
    r.max_abs_diff = reference.map_or(Some(0.0), |re| max_abs_diff(&first, re));
    let e0 = system::energy_uj();
    let timed = measure(a.warmup, a.iters, None, || session.run(&views).map(|_| ()));
    let e1 = system::energy_uj();
    let (stats, _) = match timed {
        Ok(s) => s,
        Err(e) => return fail(r, "error", e),
    };
    r.iters = stats.samples_ms.len();
    r.status = "ok".into();
    r.p50_ms = Some(stats.p50_ms);
    r.p90_ms = Some(stats.p90_ms);
    r.p99_ms = Some(stats.p99_ms);
    r.throughput_ips = Some(a.batch as f64 * 1e3 / stats.p50_ms);
    r.peak_mem_mb = match (system::peak_rss_mb(), rss0) {
        (Some(p), Some(s)) => Some((p - s).max(0.0)),
        _ => None,
    };
    let mem = session.memory();
    let mb = |b: Option<usize>| b.map(|b| b as f64 / (1024.0 * 1024.0));
    (r.weights_mb, r.arena_mb, r.scratch_mb) = (mb(mem.weights), mb(mem.arena), mb(mem.scratch));
    // Energy counted over warm-up and timed runs together, per image.
    r.energy_mj = match (e0, e1) {
        (Some(x), Some(y)) if y >= x => {
            Some((y - x) as f64 / 1e3 / ((a.warmup + r.iters) * a.batch) as f64)
        }
        _ => None,
    };
    r
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
    let mut reports = Vec::new();
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
        let results = a
            .backends
            .iter()
            .map(|id| bench_backend(&a, &graph, id, &inputs, reference.as_deref()))
            .collect();
        reports.push(ModelReport {
            model: path.display().to_string(),
            results,
        });
    }
    if a.json {
        return if reports.len() == 1 {
            print_json(&reports[0])
        } else {
            print_json(&reports)
        };
    }
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or("-".to_string(), f);
    let mut rows = Vec::new();
    for rep in &reports {
        let model = std::path::Path::new(&rep.model)
            .file_name()
            .map_or(rep.model.clone(), |f| f.to_string_lossy().into_owned());
        for r in &rep.results {
            if r.status != "ok" {
                let mut row = vec![
                    model.clone(),
                    r.backend.clone(),
                    r.status.clone(),
                    r.batch.to_string(),
                ];
                row.extend(std::iter::repeat_n("-".to_string(), 9));
                rows.push(row);
                continue;
            }
            rows.push(vec![
                model.clone(),
                r.backend.clone(),
                r.status.clone(),
                r.batch.to_string(),
                opt(r.init_ms, table::ms),
                opt(r.p50_ms, table::ms),
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
        "p90 ms",
        "p99 ms",
        "img/s",
        "peak MB",
        "arena MB",
        "mJ/img",
        "max|diff|",
    ];
    println!("{}", table::render(&headers, &rows));
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
    Ok(())
}
