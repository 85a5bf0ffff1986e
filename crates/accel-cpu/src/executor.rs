//! Compiled CPU graph: a list of steps over numbered value slots, with weights packed once.

use crate::kernels::conv::ConvKernel;
use crate::kernels::conv_transpose::ConvTransposeKernel;
use crate::kernels::lstm::LstmKernel;
use crate::kernels::matmul::{GemmKernel, MatMulKernel};
use crate::kernels::pool::pool;
use accel_core::ir::{Graph, Node, Op, ValueInfo};
use accel_core::ops::{self, reshape_shape, squeeze_shape, unsqueeze_shape};
use accel_core::passes::check_inputs;
use accel_core::{DType, Error, Executable, Precision, Result, Tensor, TensorView};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a step reads a value from.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Value(usize),
    Const(usize),
}

enum Kernel {
    /// Weights known at compile time, packed.
    Conv(ConvKernel),
    ConvTranspose(ConvTransposeKernel),
    MatMul(MatMulKernel),
    Gemm(GemmKernel),
    Lstm(LstmKernel),
    /// Heavy op whose weights arrive at run time: packed per run.
    Dynamic,
    Pool {
        max: bool,
    },
    /// Light op evaluated by core's reference implementation.
    Core,
}

struct Step {
    node: Node,
    kernel: Kernel,
    inputs: Vec<Option<Slot>>,
    outputs: Vec<Option<usize>>,
    /// Values read for the last time by this step.
    frees: Vec<usize>,
}

pub struct CpuExecutable {
    /// Declared graph inputs; input i lives in value slot i.
    inputs: Vec<ValueInfo>,
    /// `ACCEL_CPU_PROFILE` was set when the graph was compiled.
    profile: bool,
    outputs: Vec<Slot>,
    consts: Vec<Arc<Tensor>>,
    steps: Vec<Step>,
    num_values: usize,
    pool: rayon::ThreadPool,
}

impl CpuExecutable {
    /// `Precision::F16` holds the GEMM-packed weights (convolutions, ConvTranspose, constant
    /// MatMul/Gemm operands, LSTM input weights) as f16; activations stay f32.
    pub fn new(graph: &Graph, threads: usize, precision: Precision) -> Result<CpuExecutable> {
        graph.validate()?;
        let mut slots: HashMap<&str, Slot> = HashMap::new();
        let mut consts = Vec::new();
        for (name, t) in &graph.constants {
            slots.insert(name, Slot::Const(consts.len()));
            consts.push(t.clone());
        }
        // Graph inputs take the first value slots, in order.
        for (i, vi) in graph.inputs.iter().enumerate() {
            slots.insert(&vi.name, Slot::Value(i));
        }
        let mut num_values = graph.inputs.len();
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let ins =
                node.inputs
                    .iter()
                    .map(|i| {
                        if i.is_empty() {
                            Ok(None)
                        } else {
                            slots.get(i.as_str()).copied().map(Some).ok_or_else(|| {
                                Error::node(node, format!("reads unknown value '{i}'"))
                            })
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
            let mut outs = Vec::new();
            for o in &node.outputs {
                if o.is_empty() {
                    outs.push(None);
                } else {
                    slots.insert(o, Slot::Value(num_values));
                    outs.push(Some(num_values));
                    num_values += 1;
                }
            }
            let mut kernel = compile_node(graph, node)?;
            if precision == Precision::F16 {
                kernel.use_f16_weights();
            }
            steps.push(Step {
                node: node.clone(),
                kernel,
                inputs: ins,
                outputs: outs,
                frees: vec![],
            });
        }
        let outputs = graph
            .outputs
            .iter()
            .map(|o| {
                slots.get(o.name.as_str()).copied().ok_or_else(|| {
                    Error::InvalidModel(format!("output '{}' is never produced", o.name))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Free each value after its last reader, unless it is a graph output.
        let keep: Vec<usize> = outputs
            .iter()
            .filter_map(|s| {
                if let Slot::Value(v) = s {
                    Some(*v)
                } else {
                    None
                }
            })
            .collect();
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (si, s) in steps.iter().enumerate() {
            for slot in s.inputs.iter().flatten() {
                if let Slot::Value(v) = slot {
                    last_use.insert(*v, si);
                }
            }
        }
        for (v, si) in last_use {
            if !keep.contains(&v) {
                steps[si].frees.push(v);
            }
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("accel-cpu-{i}"))
            .build()
            .map_err(|e| Error::Other(format!("cannot start {threads} CPU worker threads: {e}")))?;
        Ok(CpuExecutable {
            inputs: graph.inputs.clone(),
            profile: std::env::var_os("ACCEL_CPU_PROFILE").is_some(),
            outputs,
            consts,
            steps,
            num_values,
            pool,
        })
    }
}

impl Kernel {
    fn use_f16_weights(&mut self) {
        match self {
            Kernel::Conv(k) => k.use_f16_weights(),
            Kernel::ConvTranspose(k) => k.use_f16_weights(),
            Kernel::MatMul(k) => k.use_f16_weights(),
            Kernel::Gemm(k) => k.use_f16_weights(),
            Kernel::Lstm(k) => k.use_f16_weights(),
            Kernel::Dynamic | Kernel::Pool { .. } | Kernel::Core => {}
        }
    }

    fn weight_bytes(&self) -> usize {
        match self {
            Kernel::Conv(k) => k.weight_bytes(),
            Kernel::ConvTranspose(k) => k.weight_bytes(),
            Kernel::MatMul(k) => k.weight_bytes(),
            Kernel::Gemm(k) => k.weight_bytes(),
            Kernel::Lstm(k) => k.weight_bytes(),
            Kernel::Dynamic | Kernel::Pool { .. } | Kernel::Core => 0,
        }
    }
}

impl CpuExecutable {
    /// Bytes of compiled (packed) weights of the heavy operators; what f16 halves.
    pub fn weight_bytes(&self) -> usize {
        self.steps.iter().map(|s| s.kernel.weight_bytes()).sum()
    }
}

/// Packs weights for the heavy ops whose weights are constants.
fn compile_node(graph: &Graph, node: &Node) -> Result<Kernel> {
    let c = |i: usize| node.input(i).and_then(|n| graph.constant(n));
    let f32_weight = |i: usize| c(i).filter(|t| t.dtype() == DType::F32);
    Ok(match &node.op {
        Op::Conv(a) => match f32_weight(1) {
            Some(w) if node.input(2).is_none() || c(2).is_some() => {
                Kernel::Conv(ConvKernel::new(node, a, w, c(2))?)
            }
            _ => Kernel::Dynamic,
        },
        Op::ConvTranspose(a) => match f32_weight(1) {
            Some(w) if node.input(2).is_none() || c(2).is_some() => {
                Kernel::ConvTranspose(ConvTransposeKernel::new(node, a, w, c(2))?)
            }
            _ => Kernel::Dynamic,
        },
        Op::MatMul { activation } => {
            Kernel::MatMul(MatMulKernel::new(node, f32_weight(1), *activation)?)
        }
        Op::Gemm(g) => Kernel::Gemm(GemmKernel::new(node, g, f32_weight(1))?),
        Op::Lstm(l) => match (f32_weight(1), f32_weight(2)) {
            (Some(w), Some(r)) if node.input(3).is_none() || c(3).is_some() => {
                Kernel::Lstm(LstmKernel::new(node, l, w, r, c(3))?)
            }
            _ => Kernel::Dynamic,
        },
        Op::MaxPool(_) => Kernel::Pool { max: true },
        Op::AveragePool(_) => Kernel::Pool { max: false },
        _ => Kernel::Core,
    })
}

fn require<'a>(node: &Node, ins: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor> {
    ins.get(i)
        .copied()
        .flatten()
        .ok_or_else(|| Error::node(node, format!("input {i} is required")))
}

/// Heavy ops only take f32 on this backend; say so instead of failing deep in a kernel.
fn require_f32(node: &Node, ins: &[Option<&Tensor>]) -> Result<()> {
    match ins
        .iter()
        .flatten()
        .find(|t| t.dtype() != DType::F32 && t.dtype() != DType::I32 && t.dtype() != DType::I64)
    {
        Some(t) => Err(Error::node(
            node,
            format!(
                "the CPU backend runs {} in f32 only, got {}",
                node.op.name(),
                t.dtype()
            ),
        )),
        None => Ok(()),
    }
}

fn run_step(step: &Step, ins: &[Option<&Tensor>], owned_x: Option<Tensor>) -> Result<Vec<Tensor>> {
    let node = &step.node;
    let x = || require(node, ins, 0);
    match &step.kernel {
        Kernel::Conv(k) => Ok(vec![k.run(node, x()?)?]),
        Kernel::ConvTranspose(k) => Ok(vec![k.run(node, x()?)?]),
        Kernel::MatMul(k) => {
            require_f32(node, ins)?;
            Ok(vec![k.run(node, x()?, require(node, ins, 1)?)?])
        }
        Kernel::Gemm(k) => {
            require_f32(node, ins)?;
            Ok(vec![k.run(
                node,
                x()?,
                require(node, ins, 1)?,
                ins.get(2).copied().flatten(),
            )?])
        }
        Kernel::Lstm(k) => {
            require_f32(node, ins)?;
            let o = |i| ins.get(i).copied().flatten();
            k.run(node, x()?, o(4), o(5), o(6))
        }
        Kernel::Dynamic => {
            require_f32(node, ins)?;
            let w = require(node, ins, 1)?;
            let b = ins.get(2).copied().flatten();
            match &node.op {
                Op::Conv(a) => Ok(vec![ConvKernel::new(node, a, w, b)?.run(node, x()?)?]),
                Op::ConvTranspose(a) => Ok(vec![
                    ConvTransposeKernel::new(node, a, w, b)?.run(node, x()?)?,
                ]),
                Op::Lstm(l) => {
                    let r = require(node, ins, 2)?;
                    let b = ins.get(3).copied().flatten();
                    let o = |i| ins.get(i).copied().flatten();
                    LstmKernel::new(node, l, w, r, b)?.run(node, x()?, o(4), o(5), o(6))
                }
                _ => unreachable!("only convs and LSTM compile to Dynamic"),
            }
        }
        Kernel::Pool { max } => {
            require_f32(node, ins)?;
            let p = match &node.op {
                Op::MaxPool(p) | Op::AveragePool(p) => p,
                _ => unreachable!("Pool kernels come from pool ops"),
            };
            Ok(vec![pool(node, p, *max, x()?)?])
        }
        Kernel::Core => {
            // Shape-only ops move their input when this was its last reader.
            if let Some(t) = owned_x {
                let err = |e: Error| Error::node(node, e.to_string());
                let shape = match &node.op {
                    Op::Reshape { allowzero } => {
                        reshape_shape(t.shape(), &require(node, ins, 1)?.to_i64_vec()?, *allowzero)
                            .map_err(err)?
                    }
                    Op::Squeeze => squeeze_shape(
                        t.shape(),
                        ins.get(1)
                            .copied()
                            .flatten()
                            .map(|a| a.to_i64_vec())
                            .transpose()?
                            .as_deref(),
                    )
                    .map_err(err)?,
                    Op::Unsqueeze => {
                        unsqueeze_shape(t.shape(), &require(node, ins, 1)?.to_i64_vec()?)
                            .map_err(err)?
                    }
                    _ => unreachable!("only reshapes are given ownership"),
                };
                return Ok(vec![t.reshape(shape)?]);
            }
            ops::eval(node, ins)
        }
    }
}

impl Executable for CpuExecutable {
    fn run(&self, inputs: &[TensorView]) -> Result<Vec<Tensor>> {
        check_inputs(&self.inputs, inputs)?;
        let mut env: Vec<Option<Tensor>> = (0..self.num_values).map(|_| None).collect();
        for (slot, t) in env.iter_mut().zip(inputs) {
            *slot = Some(t.to_tensor());
        }
        let profile = self.profile;
        let mut times: Vec<(f64, &str, &str)> = Vec::new();
        self.pool.install(|| -> Result<()> {
            for step in &self.steps {
                let t0 = profile.then(std::time::Instant::now);
                // Reshape-like ops may take their input instead of copying it.
                let movable = matches!(
                    step.node.op,
                    Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze
                );
                let owned_x = match step.inputs.first() {
                    Some(Some(Slot::Value(v))) if movable && step.frees.contains(v) => {
                        env[*v].take()
                    }
                    _ => None,
                };
                let outs = {
                    let ins: Vec<Option<&Tensor>> = step
                        .inputs
                        .iter()
                        .enumerate()
                        .map(|(i, s)| match s {
                            None => None,
                            Some(_) if i == 0 && owned_x.is_some() => None,
                            Some(Slot::Const(c)) => Some(self.consts[*c].as_ref()),
                            Some(Slot::Value(v)) => env[*v].as_ref(),
                        })
                        .collect();
                    run_step(step, &ins, owned_x)?
                };
                for (slot, t) in step.outputs.iter().zip(outs) {
                    if let Some(s) = slot {
                        env[*s] = Some(t);
                    }
                }
                for v in &step.frees {
                    env[*v] = None;
                }
                if let Some(t0) = t0 {
                    times.push((
                        t0.elapsed().as_secs_f64() * 1e3,
                        step.node.op.name(),
                        &step.node.name,
                    ));
                }
            }
            Ok(())
        })?;
        if profile {
            print_profile(&mut times);
        }
        self.outputs
            .iter()
            .map(|s| match s {
                Slot::Const(c) => Ok(self.consts[*c].as_ref().clone()),
                Slot::Value(v) => env[*v]
                    .take()
                    .ok_or_else(|| Error::Other("an output was not computed".into())),
            })
            .collect()
    }
}

/// `ACCEL_CPU_PROFILE=1`: per-node times of each run, slowest first, on stderr.
fn print_profile(times: &mut [(f64, &str, &str)]) {
    let total: f64 = times.iter().map(|t| t.0).sum();
    times.sort_by(|a, b| b.0.total_cmp(&a.0));
    eprintln!("accel-cpu profile: {total:.3} ms in {} steps", times.len());
    for (ms, op, name) in times.iter().take(15) {
        eprintln!(
            "  {ms:8.3} ms  {:5.1}%  {op:<16} {name}",
            100.0 * ms / total.max(1e-9)
        );
    }
}
