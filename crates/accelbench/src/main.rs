//! accelbench: see every backend of this machine side by side.

mod bench;
mod compare;
mod devices;
mod infer;
mod inspect;
mod labels;
mod plan;
mod plot;
mod progress;
mod read;
mod system;
mod table;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "accelbench",
    version,
    about = "accel: devices, inference and benchmarks side by side"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every backend with its device, or the reason it is unavailable.
    Devices(devices::Args),
    /// Run a model on .npy inputs and write one .npy per output.
    Infer(infer::Args),
    /// Measure init time, latency percentiles, throughput and memory per backend.
    Bench(bench::Args),
    /// What `auto` runs a model on here: every candidate checked against the cpu
    /// reference and timed, the winner, and why each other lost (cached on disk).
    /// The main job: shipped models, auto and every available backend, batch 1 and 8, as a
    /// table, --json, --csv or an SVG figure (--plot).
    Compare(compare::Args),
    Plan(plan::Args),
    /// Run every backend once against the cpu reference; exits 1 if any disagrees or fails.
    Verify(verify::Args),
    /// Read meter digits from images (CRNN + greedy CTC); exits 1 if any image failed.
    Read(read::Args),
    /// Find defects on plate images (U-Net mask, area, regions); exits 1 if any image failed.
    Inspect(inspect::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices(a) => devices::run(a).map(|()| ExitCode::SUCCESS),
        Command::Infer(a) => infer::run(a).map(|()| ExitCode::SUCCESS),
        Command::Bench(a) => bench::run(a).map(|()| ExitCode::SUCCESS),
        Command::Compare(a) => compare::run(a).map(|()| ExitCode::SUCCESS),
        Command::Plan(a) => plan::run(a).map(|()| ExitCode::SUCCESS),
        Command::Verify(a) => verify::run(a),
        Command::Read(a) => read::run(a),
        Command::Inspect(a) => inspect::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Per-image failures of `read` and `inspect`: one `error:` line each on stderr (after the
/// results, which name them too), and exit status 1 if there was any.
fn finish(errors: &[accel::Error]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// An f32 as JSON with its own shortest digits (0.98, not 0.9800000190734863); NaN is null.
fn json_f32(v: f32) -> serde_json::Value {
    v.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Prints one JSON document on stdout.
fn print_json(v: &impl serde::Serialize) -> accel::Result<()> {
    use std::io::Write;
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| accel::Error::Other(format!("cannot encode JSON: {e}")))?;
    // A reader that stops early (`| head`) is not an error of ours; println! would panic.
    match writeln!(std::io::stdout().lock(), "{s}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(accel::Error::io("stdout", e)),
        _ => Ok(()),
    }
}

/// A model argument: a path, or the name of a shipped model (`crnn`, `unet`).
fn resolve_model(arg: &str) -> accel::Result<std::path::PathBuf> {
    let p = std::path::PathBuf::from(arg);
    if p.exists() {
        return Ok(p);
    }
    match accel::shipped_model(arg) {
        Some(p) if p.exists() => Ok(p),
        _ if arg.ends_with(".onnx") || arg.contains('/') => Err(accel::Error::io(
            &p,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        )),
        _ => Err(accel::Error::Other(format!(
            "'{arg}' is neither a file nor a shipped model (crnn, unet); set ACCEL_MODELS_DIR or run from the repository root"
        ))),
    }
}
