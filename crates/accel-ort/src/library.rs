//! Finding and loading libonnxruntime once per process (ort keeps one global API handle).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The loaded library and the environment sessions are created in.
pub struct Runtime {
    pub env: ort::environment::Environment,
    pub library: PathBuf,
    pub version: String,
}

/// Where accel looks for libonnxruntime, in order: the explicit path, `ORT_DYLIB_PATH`, the
/// project's set-up location (`.ort/onnxruntime/capi/`, or `ACCEL_ORT_DIR`), then a Python
/// environment's `onnxruntime/capi/` (`VIRTUAL_ENV`, then the project's `.venv`).
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let setup = std::env::var_os("ACCEL_ORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".ort"));
    out.extend(library_in(&setup.join("onnxruntime/capi")));
    let mut venvs: Vec<PathBuf> = std::env::var_os("VIRTUAL_ENV")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    venvs.push(root.join(".venv"));
    for venv in venvs {
        if let Ok(entries) = std::fs::read_dir(venv.join("lib")) {
            for e in entries.flatten() {
                out.extend(library_in(&e.path().join("site-packages/onnxruntime/capi")));
            }
        }
    }
    out
}

/// The versioned libonnxruntime in a folder (providers' libraries are left out).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    libs.sort();
    libs.pop()
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Loads ONNX Runtime on first use; later calls get the same result (explicit paths included:
/// a process holds one ORT library).
pub fn runtime(explicit: Option<&Path>) -> Result<&'static Runtime, String> {
    RUNTIME
        .get_or_init(|| load(&candidates(explicit)))
        .as_ref()
        .map_err(Clone::clone)
}

fn load(candidates: &[PathBuf]) -> Result<Runtime, String> {
    if candidates.is_empty() {
        return Err("no ONNX Runtime library found: set ORT_DYLIB_PATH, or run scripts/setup.sh to install it into .ort/".into());
    }
    let mut tried = Vec::new();
    for path in candidates {
        if !path.exists() {
            tried.push(format!("{} (missing)", path.display()));
            continue;
        }
        // Load from the real folder: ORT finds its provider libraries next to the file.
        let real = path.canonicalize().unwrap_or_else(|_| path.clone());
        match load_one(&real) {
            Ok(rt) => return Ok(rt),
            Err(e) => tried.push(format!("{} ({e})", real.display())),
        }
    }
    Err(format!(
        "no ONNX Runtime library could be loaded; tried: {}",
        tried.join("; ")
    ))
}

/// Loads one file as ONNX Runtime.
pub fn load_one(path: &Path) -> Result<Runtime, String> {
    let builder = ort::init_from(path).map_err(|e| e.to_string())?;
    let env = builder
        .with_name("accel")
        .build()
        .map_err(|e| e.to_string())?;
    let version = version_of(path);
    Ok(Runtime {
        env,
        library: path.to_path_buf(),
        version,
    })
}

/// The version in the library's file name (libonnxruntime.so.1.24.1 -> 1.24.1).
fn version_of(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libonnxruntime.so."))
        .unwrap_or("unknown")
        .to_string()
}
