//! accel-wgpu: accel's GPU backend on wgpu compute pipelines (Vulkan, Metal, DX12, GL ES).
//!
//! Every adapter wgpu finds is a backend `wgpu:N`. Compiling a graph checks that every node
//! has a kernel, creates the device on first use, uploads the weights once and builds a
//! [`program`] for the graph's input shapes: the graph specialised to those shapes, lowered
//! node by node (`ops/`, one module per operator family) to dispatches of the WGSL kernels
//! in `kernels/`, with device buffers planned from the values' lifetimes. Other input shapes
//! (another batch size) get a program of their own on first use, reusing the weights.

mod device;
mod kernels;
mod ops;
mod precision;
mod program;

use accel_core::{
    Backend, CompileOptions, DeviceInfo, Error, Executable, Graph, KernelProfile, MemoryStats,
    Node, Precision, Probe, Result, Tensor, TensorView, passes,
};
use device::{Gpu, adapters, device_info};
use kernels::Storage;
use ops::Consts;
use program::Program;
use std::sync::{Arc, Mutex, OnceLock};

pub use device::NO_ADAPTER;

/// Probes this machine: one backend per adapter, or `wgpu` unavailable with the reason.
pub fn probe() -> Vec<Probe> {
    let found = adapters();
    if found.is_empty() {
        return vec![Probe::unavailable("wgpu", NO_ADAPTER)];
    }
    (0..found.len())
        .map(|i| Probe {
            id: format!("wgpu:{i}"),
            backend: Ok(Arc::new(WgpuBackend::new(i))),
        })
        .collect()
}

/// One adapter; its device is created on the first compile and shared by every executable.
pub struct WgpuBackend {
    id: String,
    index: usize,
    gpu: OnceLock<std::result::Result<Arc<Gpu>, String>>,
}

impl WgpuBackend {
    fn new(index: usize) -> WgpuBackend {
        WgpuBackend {
            id: format!("wgpu:{index}"),
            index,
            gpu: OnceLock::new(),
        }
    }

    fn gpu(&self) -> Result<Arc<Gpu>> {
        self.gpu
            .get_or_init(|| Gpu::new(&adapters()[self.index], &self.id).map(Arc::new))
            .clone()
            .map_err(|reason| Error::BackendUnavailable {
                backend: self.id.clone(),
                reason,
            })
    }
}

impl Backend for WgpuBackend {
    fn id(&self) -> &str {
        &self.id
    }

    fn device(&self) -> DeviceInfo {
        device_info(&adapters()[self.index])
    }

    /// Kernel ops, and the shape arithmetic that specialising to input shapes folds away
    /// (Shape, Gather, Cast, ... on shapes): a node of that kind still standing after
    /// specialisation is an error at compile time, naming the node.
    fn supports(&self, node: &Node) -> bool {
        ops::supports(&node.op) || accel_core::ops::can_eval(&node.op)
    }

    fn compile(&self, graph: &Graph, options: &CompileOptions) -> Result<Box<dyn Executable>> {
        let gpu = self.gpu()?;
        let storage = match options.precision {
            Precision::F32 => Storage::F32,
            Precision::F16 if gpu.device.features().contains(wgpu::Features::SHADER_F16) => {
                Storage::F16
            }
            Precision::F16 => {
                return Err(Error::Other(format!(
                    "{} has no SHADER_F16: the wgpu backend runs f32 here",
                    self.id
                )));
            }
        };
        let exe = WgpuExecutable {
            graph: graph.clone(),
            storage,
            profile: options.profile,
            gpu,
            state: Mutex::new(State {
                consts: Consts::new(),
                last_profile: None,
                programs: Vec::new(),
            }),
        };
        // The program for the declared shapes (symbolic dimensions as 1) is built now, so
        // that what can fail at compile time does: an op without a kernel, say. An input of
        // unknown rank leaves it to the first run.
        let shapes: Option<Vec<Vec<usize>>> = graph
            .inputs
            .iter()
            .map(|vi| {
                let dims = vi.shape.as_ref()?;
                Some(dims.iter().map(|d| d.known().unwrap_or(1)).collect())
            })
            .collect();
        if let Some(shapes) = shapes {
            let mut state = exe.state.lock().unwrap_or_else(|e| e.into_inner());
            exe.program(&mut state, &shapes)?;
        }
        Ok(Box::new(exe))
    }
}

/// Programs kept per executable: each holds its device buffers, so a caller cycling through
/// many input shapes keeps only the most recent.
const MAX_PROGRAMS: usize = 4;

struct State {
    consts: Consts,
    last_profile: Option<KernelProfile>,
    /// Programs by input shapes, the most recently used last.
    programs: Vec<(Vec<Vec<usize>>, Program)>,
}

pub struct WgpuExecutable {
    graph: Graph,
    /// f32, or f16 past the leading layers (`precision.rs`).
    storage: Storage,
    /// Time every kernel (a compute pass each), not only the whole run.
    profile: bool,
    gpu: Arc<Gpu>,
    /// Runs take turns: a program's buffers serve one run at a time.
    state: Mutex<State>,
}

impl WgpuExecutable {
    /// The program for these input shapes, built on first use.
    fn program<'s>(&self, state: &'s mut State, shapes: &[Vec<usize>]) -> Result<&'s mut Program> {
        match state.programs.iter().position(|(s, _)| s == shapes) {
            Some(i) => {
                let p = state.programs.remove(i);
                state.programs.push(p);
            }
            None => {
                let named: Vec<(&str, &[usize])> = self
                    .graph
                    .inputs
                    .iter()
                    .zip(shapes)
                    .map(|(vi, s)| (vi.name.as_str(), s.as_slice()))
                    .collect();
                let g = passes::specialize(&self.graph, &named)?;
                let p =
                    Program::build(&self.gpu, &g, &mut state.consts, self.storage, self.profile)?;
                if state.programs.len() == MAX_PROGRAMS {
                    state.programs.remove(0);
                }
                state.programs.push((shapes.to_vec(), p));
            }
        }
        Ok(&mut state.programs.last_mut().expect("just placed").1)
    }
}

impl Executable for WgpuExecutable {
    fn run(&self, inputs: &[TensorView]) -> Result<Vec<Tensor>> {
        passes::check_inputs(&self.graph.inputs, inputs)?;
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        self.program(state, &shapes)?;
        let (_, program) = state.programs.last_mut().expect("built above");
        let outputs = program.run(&self.gpu, &state.consts, inputs);
        state.last_profile = program.last_profile.clone();
        outputs
    }

    fn last_kernel_profile(&self) -> Option<KernelProfile> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last_profile.clone()
    }

    fn memory(&self) -> MemoryStats {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        MemoryStats {
            weights: Some(state.consts.bytes),
            arena: state.programs.iter().map(|(_, p)| p.arena_bytes).max(),
            scratch: None,
        }
    }
}
