//! The seam every backend implements: compile once, run many.

use crate::{Graph, Node, Result, Tensor, TensorView};

/// What a person needs to tell devices apart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceInfo {
    /// e.g. "AMD EPYC 7B13 (2 threads by default, avx2+fma)" or "NVIDIA H100 (Vulkan)".
    pub name: String,
    /// e.g. "cpu", "discrete-gpu", "integrated-gpu".
    pub kind: String,
    /// Free-form details (ISA, driver, library version).
    pub details: Vec<(String, String)>,
}

/// What an executable stores its tensors in. Arithmetic stays f32 (accumulation included)
/// in every backend; `F16` halves weight memory and traffic where the backend supports it:
/// the cpu backend keeps packed weights in f16, wgpu stores tensors in f16 past the graph's
/// leading layers (mixed precision). Accuracy is checked against 1e-2, not 1e-4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        })
    }
}

/// Options common to every backend; backends ignore what does not apply to them.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Worker threads; `None` means the backend's default (physical cores for the CPU).
    pub threads: Option<usize>,
    pub precision: Precision,
    /// Record each kernel's device time on every run (GPU backends with timestamp queries;
    /// costs a compute pass per kernel). Without it they record only the whole run's.
    pub profile: bool,
}

/// Device-side times of one run, where a backend measures them (GPU timestamp queries).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelProfile {
    /// From the first kernel's start to the last one's end.
    pub total_ms: f64,
    /// Per node, in graph order, with the node's operator; only when compiled with
    /// `CompileOptions::profile`.
    pub nodes: Vec<NodeTime>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeTime {
    pub node: String,
    pub op: String,
    pub ms: f64,
}

pub trait Backend: Send + Sync {
    /// Stable id used on the command line: "cpu", "wgpu:0", "ort-openvino", ...
    fn id(&self) -> &str;
    fn device(&self) -> DeviceInfo;
    /// Whether this backend can execute the node (lets a planner partition a graph).
    fn supports(&self, node: &Node) -> bool;
    /// Compiles an optimized graph: weights are packed and buffers planned here, not per run.
    fn compile(&self, graph: &Graph, options: &CompileOptions) -> Result<Box<dyn Executable>>;
}

pub trait Executable: Send + Sync {
    /// Runs the graph on inputs given in the order of `Graph::inputs`; returns outputs in the
    /// order of `Graph::outputs`.
    fn run(&self, inputs: &[TensorView]) -> Result<Vec<Tensor>>;

    /// What the compiled graph holds in memory, as far as the backend knows it.
    fn memory(&self) -> MemoryStats {
        MemoryStats::default()
    }

    /// Device times of the last run, where the backend measures them.
    fn last_kernel_profile(&self) -> Option<KernelProfile> {
        None
    }
}

/// Memory a compiled graph holds, in bytes; None where the backend does not say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Compiled (packed) weights.
    pub weights: Option<usize>,
    /// The planned activation arena of the largest input shape run so far.
    pub arena: Option<usize>,
    /// Kernel scratch buffers kept for reuse.
    pub scratch: Option<usize>,
}

/// What probing a backend found: a usable backend, or the reason there is none.
pub struct Probe {
    pub id: String,
    pub backend: std::result::Result<std::sync::Arc<dyn Backend>, String>,
}

impl Probe {
    pub fn unavailable(id: impl Into<String>, reason: impl Into<String>) -> Probe {
        Probe {
            id: id.into(),
            backend: Err(reason.into()),
        }
    }
}
