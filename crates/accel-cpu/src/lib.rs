//! accel-cpu: the CPU backend. Heavy ops (Conv, ConvTranspose, MatMul, Gemm, LSTM, pools) run
//! on packed-GEMM kernels with runtime ISA dispatch and a per-executable thread pool; the
//! light ops use accel-core's reference implementations.

mod executor;
mod images;
pub mod isa;
pub mod kernels;
mod memory;
pub mod scratch;

pub use executor::CpuExecutable;

use accel_core::{Backend, CompileOptions, DeviceInfo, Executable, Graph, Node, Result};

/// The CPU backend, id "cpu".
#[derive(Debug, Clone, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> CpuBackend {
        CpuBackend
    }

    /// Threads used when the options say nothing: one per physical core this process may
    /// use. SMT siblings share one core's FMA units, so a second thread on them only adds
    /// synchronisation.
    pub fn default_threads() -> usize {
        let logical = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        physical_cores().map_or(logical, |p| p.clamp(1, logical))
    }
}

/// Distinct (package, core) pairs in Linux's CPU topology; None where it is not readable.
fn physical_cores() -> Option<usize> {
    let mut cores = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/sys/devices/system/cpu").ok()? {
        let path = entry.ok()?.path();
        let is_cpu = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("cpu"))
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        if !is_cpu {
            continue;
        }
        let read = |f: &str| std::fs::read_to_string(path.join("topology").join(f)).ok();
        if let (Some(pkg), Some(core)) = (read("physical_package_id"), read("core_id")) {
            cores.insert((pkg.trim().to_string(), core.trim().to_string()));
        }
    }
    (!cores.is_empty()).then_some(cores.len())
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
                "{} ({} threads by default, {})",
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
        Ok(Box::new(CpuExecutable::new(
            graph,
            threads,
            options.precision,
        )?))
    }
}
