//! accel-candle: accel's IR executed with candle tensors: a second, independently written
//! implementation of every op (candle's conv, matmul, pooling and elementwise kernels, not
//! accel's), used as an oracle beside the CPU reference, and a CUDA path on NVIDIA machines
//! behind the `cuda` feature.
//!
//! A compiled graph converts its weights to candle tensors once; a run walks the nodes in
//! order, each op building its result from candle ops, and drops every value after its
//! last use.

mod ops;
mod value;

use accel_core::ir::{Graph, Node, ValueInfo};
use accel_core::{
    Backend, CompileOptions, DeviceInfo, Error, Executable, MemoryStats, Precision, Probe, Result,
    Tensor, TensorView,
};
use candle_core::Device;
use std::collections::HashMap;
use std::sync::Arc;
use value::{Value, to_accel, to_candle};

/// Backend ids this crate provides.
pub const BACKEND_IDS: &[&str] = &["candle-cpu", "candle-cuda"];

/// Probes this machine for the backends of this crate.
pub fn probe() -> Vec<Probe> {
    vec![
        Probe {
            id: "candle-cpu".into(),
            backend: Ok(Arc::new(CandleBackend::cpu())),
        },
        probe_cuda(),
    ]
}

#[cfg(feature = "cuda")]
fn probe_cuda() -> Probe {
    match Device::new_cuda(0) {
        Ok(device) => Probe {
            id: "candle-cuda".into(),
            backend: Ok(Arc::new(CandleBackend {
                id: "candle-cuda".into(),
                device,
            })),
        },
        Err(e) => Probe::unavailable("candle-cuda", format!("no CUDA device: {e}")),
    }
}

#[cfg(not(feature = "cuda"))]
fn probe_cuda() -> Probe {
    Probe::unavailable(
        "candle-cuda",
        "built without the `cuda` feature (build accelbench with `--features candle-cuda`, which needs the CUDA toolkit)",
    )
}

/// candle on one device.
pub struct CandleBackend {
    id: String,
    device: Device,
}

impl CandleBackend {
    /// candle's CPU backend.
    pub fn cpu() -> CandleBackend {
        CandleBackend {
            id: "candle-cpu".into(),
            device: Device::Cpu,
        }
    }
}

impl Backend for CandleBackend {
    fn id(&self) -> &str {
        &self.id
    }

    fn device(&self) -> DeviceInfo {
        let mut details = vec![("candle".to_string(), "0.11".to_string())];
        let (name, kind) = if self.device.is_cpu() {
            let flags = [
                ("avx2", candle_core::utils::with_avx()),
                ("f16c", candle_core::utils::with_f16c()),
                ("neon", candle_core::utils::with_neon()),
            ];
            let on: Vec<&str> = flags.iter().filter(|f| f.1).map(|f| f.0).collect();
            details.push(("simd".into(), on.join(" ")));
            ("candle CPU".to_string(), "cpu")
        } else {
            ("candle CUDA device 0".to_string(), "gpu")
        };
        DeviceInfo {
            name,
            kind: kind.into(),
            details,
        }
    }

    fn supports(&self, node: &Node) -> bool {
        ops::supports(&node.op)
    }

    fn compile(&self, graph: &Graph, options: &CompileOptions) -> Result<Box<dyn Executable>> {
        if options.precision != Precision::F32 {
            return Err(Error::Other(format!(
                "{} runs f32 only: it is the oracle the other backends are checked against",
                self.id
            )));
        }
        let threads = options.threads.unwrap_or(0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("accel-candle-{i}"))
            .build()
            .map_err(|e| {
                Error::Other(format!("cannot start {threads} candle worker threads: {e}"))
            })?;
        Ok(Box::new(CandleExecutable::new(
            graph,
            self.device.clone(),
            pool,
        )?))
    }
}

/// Where a node's input comes from.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Const(usize),
    Value(usize),
}

struct Step {
    node: Node,
    inputs: Vec<Option<Slot>>,
    outputs: Vec<Option<usize>>,
    /// Values whose last reader is this step.
    frees: Vec<usize>,
}

struct CandleExecutable {
    inputs: Vec<ValueInfo>,
    consts: Vec<Value>,
    steps: Vec<Step>,
    outputs: Vec<Slot>,
    num_values: usize,
    device: Device,
    pool: rayon::ThreadPool,
    weight_bytes: usize,
}

impl CandleExecutable {
    fn new(graph: &Graph, device: Device, pool: rayon::ThreadPool) -> Result<CandleExecutable> {
        for node in &graph.nodes {
            if !ops::supports(&node.op) {
                return Err(Error::UnsupportedOp {
                    op_type: node.op.name().to_string(),
                    domain: String::new(),
                    opset: graph.opset,
                    node: node.name.clone(),
                });
            }
        }
        let mut consts = Vec::new();
        let mut const_ids: HashMap<&str, usize> = HashMap::new();
        let mut weight_bytes = 0;
        let mut value_ids: HashMap<&str, usize> = HashMap::new();
        for vi in &graph.inputs {
            let n = value_ids.len();
            value_ids.insert(&vi.name, n);
        }
        let mut slot_of = |name: &str,
                           value_ids: &HashMap<&str, usize>,
                           consts: &mut Vec<Value>|
         -> Result<Slot> {
            if let Some(&v) = value_ids.get(name) {
                return Ok(Slot::Value(v));
            }
            if let Some(&c) = const_ids.get(name) {
                return Ok(Slot::Const(c));
            }
            let (key, t) = graph.constants.get_key_value(name).ok_or_else(|| {
                Error::InvalidModel(format!("value '{name}' is used before it is computed"))
            })?;
            weight_bytes += t.len() * t.dtype().size_of();
            consts.push(to_candle(t.view(), &device)?);
            const_ids.insert(key.as_str(), consts.len() - 1);
            Ok(Slot::Const(consts.len() - 1))
        };
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let inputs = node
                .inputs
                .iter()
                .map(|n| {
                    if n.is_empty() {
                        Ok(None)
                    } else {
                        slot_of(n, &value_ids, &mut consts).map(Some)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let outputs = node
                .outputs
                .iter()
                .map(|n| {
                    (!n.is_empty()).then(|| {
                        let id = value_ids.len();
                        *value_ids.entry(n.as_str()).or_insert(id)
                    })
                })
                .collect();
            steps.push(Step {
                node: node.clone(),
                inputs,
                outputs,
                frees: vec![],
            });
        }
        let outputs = graph
            .outputs
            .iter()
            .map(|o| slot_of(&o.name, &value_ids, &mut consts))
            .collect::<Result<Vec<_>>>()?;
        // Graph outputs live to the end; every other value dies after its last reader.
        let num_values = value_ids.len();
        let mut last = vec![None; num_values];
        for (i, s) in steps.iter().enumerate() {
            for slot in s.inputs.iter().flatten() {
                if let Slot::Value(v) = slot {
                    last[*v] = Some(i);
                }
            }
        }
        for o in &outputs {
            if let Slot::Value(v) = o {
                last[*v] = None;
            }
        }
        for (v, l) in last.iter().enumerate() {
            if let Some(i) = l {
                steps[*i].frees.push(v);
            }
        }
        Ok(CandleExecutable {
            inputs: graph.inputs.clone(),
            consts,
            steps,
            outputs,
            num_values,
            device,
            pool,
            weight_bytes,
        })
    }

    fn run_steps(&self, inputs: &[TensorView]) -> Result<Vec<Tensor>> {
        let mut values: Vec<Option<Value>> = vec![None; self.num_values];
        for (i, t) in inputs.iter().enumerate() {
            values[i] = Some(to_candle(*t, &self.device)?);
        }
        for step in &self.steps {
            let args: Vec<Option<&Value>> = step
                .inputs
                .iter()
                .map(|s| match s {
                    None => Ok(None),
                    Some(Slot::Const(c)) => Ok(Some(&self.consts[*c])),
                    Some(Slot::Value(v)) => values[*v].as_ref().map(Some).ok_or_else(|| {
                        Error::Other(format!(
                            "node '{}': an input was not computed",
                            step.node.name
                        ))
                    }),
                })
                .collect::<Result<_>>()?;
            let ctx = ops::Ctx {
                node: &step.node,
                device: &self.device,
            };
            let outs = ops::eval(&ctx, &args)?;
            drop(args);
            for (slot, out) in step.outputs.iter().zip(outs) {
                if let Some(v) = slot {
                    values[*v] = Some(out);
                }
            }
            for &v in &step.frees {
                values[v] = None;
            }
        }
        self.outputs
            .iter()
            .map(|s| match s {
                Slot::Const(c) => to_accel(&self.consts[*c]),
                Slot::Value(v) => values[*v]
                    .as_ref()
                    .ok_or_else(|| Error::Other("a graph output was not computed".into()))
                    .and_then(to_accel),
            })
            .collect()
    }
}

impl Executable for CandleExecutable {
    fn run(&self, inputs: &[TensorView]) -> Result<Vec<Tensor>> {
        accel_core::passes::check_inputs(&self.inputs, inputs)?;
        self.pool.install(|| self.run_steps(inputs))
    }

    fn memory(&self) -> MemoryStats {
        MemoryStats {
            weights: Some(self.weight_bytes),
            ..Default::default()
        }
    }
}
