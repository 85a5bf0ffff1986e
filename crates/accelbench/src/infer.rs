//! `accelbench infer`

use crate::{print_json, resolve_model};
use accel::{Error, Result, Session, TensorView};
use accel_core::npy::{read_npy, write_npy};
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX file, or a shipped model name (crnn, unet).
    #[arg(long)]
    model: String,
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// NAME=FILE.npy, once per model input.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Folder for the outputs, one .npy per graph output.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct OutputFile {
    name: String,
    file: String,
    shape: Vec<usize>,
    dtype: String,
}

/// Output names become file names: every character outside [A-Za-z0-9._-] turns into '_'.
pub fn file_name_for(output: &str) -> String {
    let s: String = output
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{s}.npy")
}

pub fn run(a: Args) -> Result<()> {
    let model = resolve_model(&a.model)?;
    let mut builder = Session::builder().backend(&a.backend);
    if let Some(t) = a.threads {
        builder = builder.threads(t);
    }
    let session = builder.load(&model)?;
    let mut given = Vec::new();
    for spec in &a.inputs {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| Error::Other(format!("--input '{spec}' must be NAME=FILE.npy")))?;
        given.push((name.to_string(), read_npy(file)?));
    }
    let mut tensors = Vec::new();
    for vi in session.inputs() {
        let t = given
            .iter()
            .find(|(n, _)| *n == vi.name)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                Error::Other(format!(
                    "missing --input {}=FILE.npy ({} {})",
                    vi.name,
                    vi.dtype,
                    vi.shape_string()
                ))
            })?;
        tensors.push(t);
    }
    if let Some((n, _)) = given
        .iter()
        .find(|(n, _)| !session.inputs().iter().any(|v| &v.name == n))
    {
        let names: Vec<&str> = session.inputs().iter().map(|v| v.name.as_str()).collect();
        return Err(Error::Other(format!(
            "the model has no input '{n}' (inputs: {})",
            names.join(", ")
        )));
    }
    let views: Vec<TensorView> = tensors.iter().map(|t| t.view()).collect();
    let start = std::time::Instant::now();
    let outputs = session.run(&views)?;
    let latency_ms = start.elapsed().as_secs_f64() * 1e3;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(&a.out, e))?;
    let mut written = Vec::new();
    for (vi, t) in session.outputs().iter().zip(&outputs) {
        let path = a.out.join(file_name_for(&vi.name));
        write_npy(&path, t)?;
        written.push(OutputFile {
            name: vi.name.clone(),
            file: path.display().to_string(),
            shape: t.shape().to_vec(),
            dtype: t.dtype().to_string(),
        });
    }
    if a.json {
        return print_json(&serde_json::json!({
            "model": model.display().to_string(),
            "backend": session.backend(),
            "latency_ms": latency_ms,
            "outputs": written,
        }));
    }
    for w in &written {
        println!("{} {:?} {} -> {}", w.name, w.shape, w.dtype, w.file);
    }
    Ok(())
}
