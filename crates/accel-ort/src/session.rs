//! An ONNX Runtime session as an accel Executable, with the node-placement check that keeps
//! a provider from being measured when ORT quietly ran the graph on its CPU provider.

use crate::library::Runtime;
use crate::provider::{OrtConfig, Provider};
use accel_core::ir::{Dim, Graph, ModelSource as Source, ValueInfo};
use accel_core::{DType, Error, Executable, Result, Tensor, TensorView};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use std::borrow::Cow;
use std::sync::Mutex;

fn ort_err(backend: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("{backend}: {what}: {e}"))
}

pub struct OrtExecutable {
    session: Mutex<Session>,
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
    backend: &'static str,
}

/// Builds a session for `provider` from the model's original bytes (or file, so external data
/// resolves) and, for providers other than CPU, checks that the provider took graph nodes.
pub fn compile(
    rt: &Runtime,
    provider: Provider,
    cfg: &OrtConfig,
    graph: &Graph,
    threads: Option<usize>,
) -> Result<OrtExecutable> {
    let id = provider.id();
    // The original file unless asked for accel's optimized graph (graphs built in code have no file).
    let exported = if cfg.run_optimized_graph || graph.source.is_none() {
        Some(accel_core::onnx::export_model(graph)?)
    } else {
        None
    };
    let dispatch = provider
        .dispatch(cfg)
        .map_err(|reason| Error::BackendUnavailable {
            backend: id.into(),
            reason,
        })?;
    let level = match cfg.optimization_level {
        0 => GraphOptimizationLevel::Disable,
        1 => GraphOptimizationLevel::Level1,
        2 => GraphOptimizationLevel::Level2,
        _ => GraphOptimizationLevel::Level3,
    };
    // ORT appends a timestamp in seconds: a per-process counter keeps concurrent sessions apart.
    static SESSIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let profile = std::env::temp_dir().join(format!("accel-ort-{}-{n}-{id}", std::process::id()));
    let mut b = Session::builder(&rt.env).map_err(|e| ort_err(id, "session options", e))?;
    b = b
        .with_optimization_level(level)
        .map_err(|e| ort_err(id, "optimization level", e))?;
    if let Some(t) = threads {
        b = b
            .with_intra_threads(t)
            .map_err(|e| ort_err(id, "threads", e))?;
    }
    if let Some(d) = dispatch {
        b = b
            .with_execution_providers([d])
            .map_err(|e| Error::BackendUnavailable {
                backend: id.into(),
                reason: e.to_string(),
            })?;
    }
    let check_placement = provider != Provider::Cpu;
    if check_placement {
        b = b
            .with_profiling(&profile)
            .map_err(|e| ort_err(id, "profiling", e))?;
    }
    let session = match (&exported, &graph.source) {
        (Some(bytes), _) => b.commit_from_memory(bytes),
        (None, Some(Source { path: Some(p), .. })) => b.commit_from_file(p),
        (None, Some(src)) => b.commit_from_memory(&src.bytes),
        (None, None) => unreachable!("graphs without a source are exported above"),
    }
    .map_err(|e| ort_err(id, "ONNX Runtime rejected the model", e))?;
    let exe = OrtExecutable {
        session: Mutex::new(session),
        inputs: graph.inputs.clone(),
        outputs: graph.outputs.clone(),
        backend: id,
    };
    if check_placement {
        exe.check_placement(provider)?;
    }
    Ok(exe)
}

impl OrtExecutable {
    /// Runs once on zeros (batch 1) with profiling on, then reads which provider ran each node.
    fn check_placement(&self, provider: Provider) -> Result<()> {
        let id = self.backend;
        let zeros: Vec<Tensor> = self
            .inputs
            .iter()
            .map(|vi| {
                let shape: Vec<usize> = vi.shape.as_ref().map_or(vec![], |s| {
                    s.iter()
                        .map(|d| if let Dim::Known(n) = d { *n } else { 1 })
                        .collect()
                });
                Tensor::zeros(vi.dtype, shape)
            })
            .collect();
        let views: Vec<TensorView> = zeros.iter().map(|t| t.view()).collect();
        self.run(&views)?;
        let file = {
            let mut s = self
                .session
                .lock()
                .map_err(|_| Error::Other(format!("{id}: session lock poisoned")))?;
            s.end_profiling().map_err(|e| ort_err(id, "profiling", e))?
        };
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        std::fs::remove_file(&file).ok();
        let counts = node_providers(&text);
        let mine = counts
            .iter()
            .find(|(p, _)| p == provider.ort_name())
            .map_or(0, |c| c.1);
        if mine == 0 {
            let placed: Vec<String> = counts.iter().map(|(p, n)| format!("{n} on {p}")).collect();
            return Err(Error::BackendUnavailable {
                backend: id.into(),
                reason: format!(
                    "{} registered but took none of the graph's nodes (ran {}); not measuring it as if it had",
                    provider.ort_name(),
                    if placed.is_empty() {
                        "nothing".into()
                    } else {
                        placed.join(", ")
                    }
                ),
            });
        }
        Ok(())
    }
}

/// Nodes per execution provider in an ORT profile (a JSON array of trace events).
pub fn node_providers(profile_json: &str) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    let Ok(serde_json::Value::Array(events)) = serde_json::from_str(profile_json) else {
        return counts;
    };
    for e in events {
        if e["cat"] != "Node"
            || !e["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("_kernel_time"))
        {
            continue;
        }
        if let Some(p) = e["args"]["provider"].as_str() {
            match counts.iter_mut().find(|c| c.0 == p) {
                Some(c) => c.1 += 1,
                None => counts.push((p.to_string(), 1)),
            }
        }
    }
    counts
}

fn input_value<'a>(name: &str, t: &'a TensorView) -> Result<SessionInputValue<'a>> {
    let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    let bad = |e: ort::Error| Error::Other(format!("input '{name}': {e}"));
    Ok(match t.dtype() {
        DType::F32 => TensorRef::from_array_view((shape, t.as_slice::<f32>()?))
            .map_err(bad)?
            .into(),
        DType::I64 => TensorRef::from_array_view((shape, t.as_slice::<i64>()?))
            .map_err(bad)?
            .into(),
        DType::I32 => TensorRef::from_array_view((shape, t.as_slice::<i32>()?))
            .map_err(bad)?
            .into(),
        DType::U8 => TensorRef::from_array_view((shape, t.as_slice::<u8>()?))
            .map_err(bad)?
            .into(),
        DType::Bool => TensorRef::from_array_view((shape, t.as_slice::<bool>()?))
            .map_err(bad)?
            .into(),
        DType::F16 => {
            return Err(Error::Other(format!(
                "input '{name}': f16 inputs are not passed to ONNX Runtime yet"
            )));
        }
    })
}

impl Executable for OrtExecutable {
    fn run(&self, inputs: &[TensorView]) -> Result<Vec<Tensor>> {
        let id = self.backend;
        accel_core::passes::check_inputs(&self.inputs, inputs)?;
        let mut feeds: Vec<(Cow<str>, SessionInputValue)> = Vec::with_capacity(inputs.len());
        for (vi, t) in self.inputs.iter().zip(inputs) {
            feeds.push((Cow::Borrowed(vi.name.as_str()), input_value(&vi.name, t)?));
        }
        let mut session = self
            .session
            .lock()
            .map_err(|_| Error::Other(format!("{id}: session lock poisoned")))?;
        let outs = session
            .run(feeds)
            .map_err(|e| ort_err(id, "run failed", e))?;
        self.outputs
            .iter()
            .map(|vi| {
                let v = outs
                    .get(vi.name.as_str())
                    .ok_or_else(|| Error::Other(format!("{id}: no output '{}'", vi.name)))?;
                let extract = |e: ort::Error| ort_err(id, &format!("output '{}'", vi.name), e);
                macro_rules! take {
                    ($t:ty) => {{
                        let (shape, data) = v.try_extract_tensor::<$t>().map_err(extract)?;
                        Tensor::from_vec(shape.iter().map(|&d| d as usize).collect(), data.to_vec())
                    }};
                }
                match vi.dtype {
                    DType::F32 => take!(f32),
                    DType::I64 => take!(i64),
                    DType::I32 => take!(i32),
                    DType::U8 => take!(u8),
                    DType::Bool => take!(bool),
                    DType::F16 => Err(Error::Other(format!(
                        "{id}: f16 outputs are not read from ONNX Runtime yet"
                    ))),
                }
            })
            .collect()
    }
}
