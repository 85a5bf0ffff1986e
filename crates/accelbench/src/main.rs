//! accelbench: see every backend of this machine side by side.

mod bench;
mod devices;
mod infer;
mod system;
mod table;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices(a) => devices::run(a),
        Command::Infer(a) => infer::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one JSON document on stdout.
fn print_json(v: &impl serde::Serialize) -> accel::Result<()> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| accel::Error::Other(format!("cannot encode JSON: {e}")))?;
    println!("{s}");
    Ok(())
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
