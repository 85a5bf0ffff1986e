//! accel-cpu: the CPU backend. Heavy ops (Conv, ConvTranspose, MatMul, Gemm, LSTM, pools) run
//! on packed-GEMM kernels with runtime ISA dispatch and a per-executable thread pool; the
//! light ops use accel-core's reference implementations.

mod executor;
pub mod isa;
pub mod kernels;

pub use executor::CpuExecutable;

use accel_core::{Backend, CompileOptions, DeviceInfo, Executable, Graph, Node, Result};

/// The CPU backend, id "cpu".
#[derive(Debug, Clone, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> CpuBackend {
        CpuBackend
    }

    /// Threads used when the options say nothing: one per available core.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

impl Backend for CpuBackend {
    fn id(&self) -> &str {
        "cpu"
    }

    fn device(&self) -> DeviceInfo {
        DeviceInfo {
            name: format!(
                "{} ({} threads, {})",
                cpu_model(),
                Self::default_threads(),
                isa::active().name()
            ),
            kind: "cpu".into(),
            details: vec![
                ("isa".into(), isa::active().name().into()),
                ("arch".into(), std::env::consts::ARCH.into()),
            ],
        }
    }

    fn supports(&self, _node: &Node) -> bool {
        // Every operator of the IR has a CPU implementation.
        true
    }

    fn compile(&self, graph: &Graph, options: &CompileOptions) -> Result<Box<dyn Executable>> {
        let threads = options.threads.unwrap_or_else(Self::default_threads);
        Ok(Box::new(CpuExecutable::new(graph, threads)?))
    }
}
