//! accel-ort: ONNX Runtime as accel backends, one per execution provider (`ort-cpu`,
//! `ort-openvino`, `ort-cuda`, `ort-tensorrt`, and behind features the edge delegates).
//!
//! libonnxruntime is loaded at run time (`load-dynamic`); nothing is downloaded at build time.
//! ORT falls back to its CPU provider when a provider fails to register; accel does not:
//! providers register with `error_on_failure`, and a provider that registered but took none
//! of the graph's nodes (seen in ORT's profile) is reported unavailable, never measured.

mod library;
mod provider;
mod session;

pub use library::{Runtime, candidates, load_one, runtime};
pub use provider::{OrtConfig, Provider};
pub use session::{OrtExecutable, node_providers};

use accel_core::{
    Backend, CompileOptions, DeviceInfo, Dim, Error, Executable, Graph, Node, Probe, Result,
    ValueInfo,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Backend ids this crate provides.
pub const BACKEND_IDS: &[&str] = &["ort-cpu", "ort-openvino", "ort-cuda", "ort-tensorrt"];

pub struct OrtBackend {
    provider: Provider,
    config: OrtConfig,
    runtime: &'static Runtime,
}

impl OrtBackend {
    /// The backend for `provider`, or why it cannot run here (library missing, provider not
    /// compiled in, registration failed, or it takes no node of a probe graph).
    pub fn new(provider: Provider, config: OrtConfig) -> std::result::Result<OrtBackend, String> {
        let backend = OrtBackend::unverified(provider, config)?;
        if provider != Provider::Cpu {
            backend
                .compile(&probe_graph(), &CompileOptions::default())
                .map_err(|e| match e {
                    Error::BackendUnavailable { reason, .. } => reason,
                    other => other.to_string(),
                })?;
        }
        Ok(backend)
    }

    /// The backend for `provider` with the library loaded but the provider not tried: cheap
    /// (no session), for a planner that compiles every candidate anyway and reports the
    /// provider's failure then. Compiling runs the same checks `new` runs on its probe
    /// graph (registration with `error_on_failure`, node placement).
    pub fn unverified(
        provider: Provider,
        config: OrtConfig,
    ) -> std::result::Result<OrtBackend, String> {
        let runtime = runtime(config.library.as_deref())?;
        Ok(OrtBackend {
            provider,
            config,
            runtime,
        })
    }

    pub fn runtime(&self) -> &Runtime {
        self.runtime
    }
}

impl Backend for OrtBackend {
    fn id(&self) -> &str {
        self.provider.id()
    }

    fn device(&self) -> DeviceInfo {
        let name = match self.provider {
            Provider::OpenVino => format!(
                "ONNX Runtime {} OpenVINO {}",
                self.runtime.version, self.config.openvino_device
            ),
            p => format!("ONNX Runtime {} {}", self.runtime.version, p.ort_name()),
        };
        DeviceInfo {
            name,
            kind: if matches!(
                self.provider,
                Provider::Cpu | Provider::OpenVino | Provider::Xnnpack | Provider::Acl
            ) {
                "cpu".into()
            } else {
                "accelerator".into()
            },
            details: vec![("library".into(), self.runtime.library.display().to_string())],
        }
    }

    fn supports(&self, _node: &Node) -> bool {
        // ORT partitions the graph itself; accel hands it the whole model.
        true
    }

    fn compile(&self, graph: &Graph, options: &CompileOptions) -> Result<Box<dyn Executable>> {
        Ok(Box::new(session::compile(
            self.runtime,
            self.provider,
            &self.config,
            graph,
            options.threads,
        )?))
    }
}

/// A one-node graph (Relu on [1, 8]) used to check that a provider registers and takes nodes.
fn probe_graph() -> Graph {
    let vi = |name: &str| {
        ValueInfo::new(
            name,
            accel_core::DType::F32,
            vec![Dim::Known(1), Dim::Known(8)],
        )
    };
    Graph {
        opset: 17,
        inputs: vec![vi("x")],
        outputs: vec![vi("y")],
        nodes: vec![Node {
            name: "relu".into(),
            op: accel_core::Op::Unary(accel_core::ir::UnaryOp::Relu),
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
        }],
        ..Default::default()
    }
}

/// A probed backend, or why it is unavailable.
type ProbeResult = std::result::Result<Arc<OrtBackend>, String>;

/// Probes every provider once per process (registering OpenVINO takes a fifth of a second).
pub fn probe() -> Vec<Probe> {
    static CACHE: OnceLock<Mutex<HashMap<Provider, ProbeResult>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    providers()
        .into_iter()
        .map(|p| {
            let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
            let result = guard
                .entry(p)
                .or_insert_with(|| OrtBackend::new(p, OrtConfig::default()).map(Arc::new))
                .clone();
            Probe {
                id: p.id().into(),
                backend: result.map(|b| b as Arc<dyn Backend>),
            }
        })
        .collect()
}

/// Every provider with the library loaded but untried (`OrtBackend::unverified`): what a
/// planner starts from without paying a session per provider.
pub fn probe_unverified() -> Vec<Probe> {
    providers()
        .into_iter()
        .map(|p| Probe {
            id: p.id().into(),
            backend: OrtBackend::unverified(p, OrtConfig::default())
                .map(|b| Arc::new(b) as Arc<dyn Backend>),
        })
        .collect()
}

/// The providers this build knows: the four always built, and the edge delegates whose
/// features are on.
fn providers() -> Vec<Provider> {
    let mut providers: Vec<Provider> = Provider::ALL[..4].to_vec();
    for (p, on) in [
        (Provider::Qnn, cfg!(feature = "qnn")),
        (Provider::Nnapi, cfg!(feature = "nnapi")),
        (Provider::CoreMl, cfg!(feature = "coreml")),
        (Provider::Xnnpack, cfg!(feature = "xnnpack")),
        (Provider::Acl, cfg!(feature = "acl")),
    ] {
        if on {
            providers.push(p);
        }
    }
    providers
}
