//! Compiled CPU graph: a list of steps over numbered value slots, with weights packed once.
//!
//! The first run with a given set of input shapes allocates each value as it goes and records
//! its shape; from that a [`MemoryPlan`] gives every intermediate f32 value a region of one
//! arena (see `memory`), and values computed from shapes alone (tf2onnx's Shape/Gather/Concat
//! chains) are kept as constants. Later runs with the same shapes write into the arena and
//! skip the shape arithmetic: they allocate only the outputs they return. This is ONNX
//! Runtime's memory-pattern approach; it plans at the first run rather than at compile time
//! because the seed graphs' batch axis is symbolic.

use crate::images;
use crate::kernels::conv::ConvKernel;
use crate::kernels::conv_transpose::ConvTransposeKernel;
use crate::kernels::lstm::LstmKernel;
use crate::kernels::matmul::{GemmKernel, MatMulKernel};
use crate::kernels::pool::pool;
use crate::kernels::pool::{pool_into, pool_shape};
use crate::memory::{Lifetime, plan};
use crate::scratch::ScratchPool;
use accel_core::ir::{Graph, Node, Op, ValueInfo};
use accel_core::ops::{self, reshape_shape, squeeze_shape, unsqueeze_shape};
use accel_core::passes::check_inputs;
use accel_core::{
    DType, Error, Executable, MemoryStats, Precision, Result, Tensor, TensorView, numel,
};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Input-shape signatures whose plans are kept; the oldest is dropped beyond this.
const MAX_PLANS: usize = 4;

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
    /// Values computed from input shapes and constants only.
    shape_only: Vec<bool>,
    /// Per value, the last step that reads it.
    last_use: Vec<Option<usize>>,
    plans: Mutex<Vec<PlanSlot>>,
    pool: rayon::ThreadPool,
    /// Per graph output, its value when a planned run may write it straight into a
    /// caller's buffer: produced by a step, listed once, read by no step.
    dest_outputs: Vec<Option<usize>>,
    /// One-thread pools, one per worker, for image-parallel runs of separable graphs
    /// (see `images`); empty when batches are never split.
    image_pools: Vec<rayon::ThreadPool>,
    /// Kernel scratch of this graph's workers, then one pool per image worker: a serial
    /// sub-batch then asks its own pool for the same buffers in the same order every run, so
    /// the pool settles after one run whatever the other image worker is doing.
    scratch: Vec<Arc<ScratchPool>>,
}

/// Where a value lives in a planned run.
#[derive(Clone, Debug)]
enum Place {
    /// Graph input i, read from the caller's buffer.
    Input(usize),
    /// Graph input i seen with another shape (a Reshape of it).
    InputView(usize, Vec<usize>),
    /// `numel(shape)` f32s at `offset` in the arena.
    Arena { offset: usize, shape: Vec<usize> },
    /// Computed from shapes alone: the same in every run with these input shapes.
    Static(Arc<Tensor>),
    /// Allocated by its producer each run: graph outputs, non-f32 values, fallbacks. The
    /// shape is kept for f32 values, which are then written straight into a new buffer.
    Owned(Option<Vec<usize>>),
    /// Never produced or never read.
    Unused,
}

/// The memory plan for one set of input shapes.
struct MemoryPlan {
    places: Vec<Place>,
    arena_len: usize,
    /// Steps whose outputs are all `Static`.
    skip: Vec<bool>,
}

struct PlanSlot {
    key: Vec<(DType, Vec<usize>)>,
    /// None when shapes may depend on data (see `build_plan`): such runs always allocate.
    plan: Option<Arc<MemoryPlan>>,
    /// Arenas not in use by a run.
    idle: Vec<Vec<f32>>,
}

/// Shapes and dtypes seen by a recording run, and the shape-only values' contents.
struct Recording {
    types: Vec<Option<(DType, Vec<usize>)>>,
    statics: Vec<Option<Arc<Tensor>>>,
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
        fuse_residual_adds(graph, &mut steps, graph.inputs.len());
        fuse_max_pools(graph, &mut steps);
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
        let mut last_use: Vec<Option<usize>> = vec![None; num_values];
        for (si, s) in steps.iter().enumerate() {
            for slot in s.inputs.iter().flatten() {
                if let Slot::Value(v) = slot {
                    last_use[*v] = Some(si);
                }
            }
        }
        for (v, si) in last_use.iter().enumerate() {
            if let Some(si) = si
                && !keep.contains(&v)
            {
                steps[*si].frees.push(v);
            }
        }
        // Shape arithmetic: Shape of anything, and light ops over constants and such values.
        let mut shape_only = vec![false; num_values];
        for s in &steps {
            let from_shapes = matches!(s.kernel, Kernel::Core)
                && (matches!(s.node.op, Op::Shape { .. })
                    || (s.inputs.iter().any(Option::is_some)
                        && s.inputs.iter().flatten().all(|slot| match slot {
                            Slot::Const(_) => true,
                            Slot::Value(v) => shape_only[*v],
                        })));
            if from_shapes {
                for o in s.outputs.iter().flatten() {
                    shape_only[*o] = true;
                }
            }
        }
        let mut scratch = vec![Arc::new(ScratchPool::default())];
        let worker_scratch = scratch[0].clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("accel-cpu-{i}"))
            .start_handler(move |_| crate::scratch::install(worker_scratch.clone()))
            .build()
            .map_err(|e| Error::Other(format!("cannot start {threads} CPU worker threads: {e}")))?;
        let image_pools = if threads > 1 && images::separable(graph) {
            (0..threads)
                .map(|i| {
                    let image_scratch = Arc::new(ScratchPool::default());
                    scratch.push(image_scratch.clone());
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .thread_name(move |_| format!("accel-cpu-image-{i}"))
                        .start_handler(move |_| crate::scratch::install(image_scratch.clone()))
                        .build()
                        .map_err(|e| Error::Other(format!("cannot start a CPU worker thread: {e}")))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![]
        };
        let dest_outputs = outputs
            .iter()
            .map(|s| match s {
                Slot::Value(v)
                    if last_use[*v].is_none()
                        && outputs
                            .iter()
                            .filter(|o| matches!(o, Slot::Value(u) if u == v))
                            .count()
                            == 1 =>
                {
                    Some(*v)
                }
                _ => None,
            })
            .collect();
        Ok(CpuExecutable {
            inputs: graph.inputs.clone(),
            dest_outputs,
            profile: std::env::var_os("ACCEL_CPU_PROFILE").is_some(),
            outputs,
            consts,
            steps,
            num_values,
            shape_only,
            last_use,
            plans: Mutex::new(Vec::new()),
            pool,
            image_pools,
            scratch,
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
    /// The compiled steps in run order, one line each: the op (with "+residual" where an
    /// Add was fused into a Conv) and the node name.
    pub fn steps(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| {
                let fused = matches!(s.kernel, Kernel::Conv(_)) && s.inputs.len() > 3;
                let op = s.node.op.name();
                format!(
                    "{op}{} {}",
                    if fused { "+residual" } else { "" },
                    s.node.name
                )
            })
            .collect()
    }

    /// The sub-batches a run of `batch` images is split into, run side by side on one
    /// thread each; `None` when it runs whole, its operators spread over the threads. Only
    /// graphs that treat images independently are split (see `images`).
    pub fn image_split(&self, batch: usize) -> Option<Vec<usize>> {
        if self.image_pools.is_empty() {
            return None;
        }
        images::split_sizes(batch, self.image_pools.len())
    }

    /// The node each step runs, in order: a node another was fused into (a Conv that took
    /// its residual Add or its MaxPool) stands for both.
    pub fn step_names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.node.name.as_str()).collect()
    }

    /// Bytes of compiled (packed) weights of the heavy operators; what f16 halves.
    pub fn weight_bytes(&self) -> usize {
        self.steps.iter().map(|s| s.kernel.weight_bytes()).sum()
    }
}

/// A batched layout op whose output image b reads only image b of its inputs (Concat along
/// a non-batch axis, Transpose keeping the batch axis first), one image per task: at batch
/// 8 the U-Net's decoder concats and its NHWC input transpose took 8% of a run on one
/// thread. `None` where it does not apply (batch 1, another op or axis, more than
/// [`PER_IMAGE_MAX`] inputs or axes, inputs not f32 images of the output's batch), for the
/// serial path. Nothing tensor-sized is allocated (a planned run allocates only its
/// outputs; the per-image evaluation keeps a few small vectors).
fn per_image(
    node: &Node,
    ins: &[Option<TensorView>],
    shape: &[usize],
    out: &mut [f32],
) -> Option<Result<bool>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    const MAX: usize = PER_IMAGE_MAX;
    let (n, rank) = (*shape.first()?, shape.len());
    let fits = match &node.op {
        Op::Concat { axis } => {
            let axis = if *axis < 0 { axis + rank as i64 } else { *axis };
            (1..rank as i64).contains(&axis)
        }
        Op::Transpose { perm: Some(perm) } => perm.first() == Some(&0),
        _ => false,
    };
    // (An empty output has nothing to split, and no chunk length.)
    if !fits || n < 2 || rank > MAX || out.is_empty() || out.len() != numel(shape) {
        return None;
    }
    let mut parts: [(&[f32], &[usize]); MAX] = [(&[], &[]); MAX];
    let mut count = 0;
    for v in ins.iter().flatten() {
        let (d, s) = (v.as_slice::<f32>().ok()?, v.shape());
        if count == MAX || s.len() != rank || s[0] != n || d.len() % n != 0 {
            return None;
        }
        parts[count] = (d, s);
        count += 1;
    }
    let parts = &parts[..count];
    // [1, rest of the shape] of the output and of each part.
    let one_image = |s: &[usize]| -> [usize; MAX] {
        std::array::from_fn(|i| {
            if i == 0 {
                1
            } else {
                s.get(i).copied().unwrap_or(0)
            }
        })
    };
    let image_shape = one_image(shape);
    let fitted = AtomicBool::new(true);
    let run =
        out.par_chunks_mut(out.len() / n)
            .enumerate()
            .try_for_each(|(b, chunk)| -> Result<()> {
                let shapes: [[usize; MAX]; MAX] = std::array::from_fn(|i| match parts.get(i) {
                    Some((_, s)) => one_image(s),
                    None => [0; MAX],
                });
                let mut views: [Option<TensorView>; MAX] = std::array::from_fn(|_| None);
                for (i, (d, _)) in parts.iter().enumerate() {
                    let len = d.len() / n;
                    let image = &d[b * len..(b + 1) * len];
                    views[i] = Some(TensorView::from_slice(&shapes[i][..rank], image)?);
                }
                if !ops::eval_f32_into(node, &views[..parts.len()], &image_shape[..rank], chunk)? {
                    fitted.store(false, Ordering::Relaxed);
                }
                Ok(())
            });
    // A part that does not fit leaves the serial path to say why.
    Some(run.map(|()| fitted.load(Ordering::Relaxed)))
}

/// Most inputs (and largest rank) [`per_image`] takes.
const PER_IMAGE_MAX: usize = 8;

/// Per value, the step that writes it and how many step inputs read it.
fn producers_and_uses(steps: &[Step]) -> (HashMap<usize, usize>, HashMap<usize, usize>) {
    let mut producer: HashMap<usize, usize> = HashMap::new();
    let mut uses: HashMap<usize, usize> = HashMap::new();
    for (si, s) in steps.iter().enumerate() {
        for v in s.outputs.iter().flatten() {
            producer.insert(*v, si);
        }
        for slot in s.inputs.iter().flatten() {
            if let Slot::Value(v) = slot {
                *uses.entry(*v).or_default() += 1;
            }
        }
    }
    (producer, uses)
}

/// Drops the steps marked in `removed` (fused into another).
fn remove_steps(steps: &mut Vec<Step>, removed: &[bool]) {
    let mut i = 0;
    steps.retain(|_| {
        i += 1;
        !removed[i - 1]
    });
}

/// Folds `Add(conv_out, skip)` into the Conv's epilogue (`act(conv + bias) + skip`) when the
/// Conv's output feeds only that Add, the skip input exists before the Conv runs, and both
/// have the same (inferred) shape: MobileNetV2's residual blocks. The Conv step then reads
/// the skip value as its input 3 and writes the Add's output.
fn fuse_residual_adds(graph: &Graph, steps: &mut Vec<Step>, num_inputs: usize) {
    let (producer, uses) = producers_and_uses(steps);
    let same_f32_shape = |a: &str, b: &str| match (graph.value_type(a), graph.value_type(b)) {
        (Some(x), Some(y)) => {
            x.dtype == DType::F32
                && y.dtype == DType::F32
                && x.shape.is_some()
                && x.shape == y.shape
        }
        _ => false,
    };
    let mut removed = vec![false; steps.len()];
    for t in 0..steps.len() {
        let add = &steps[t];
        let is_add = matches!(add.node.op, Op::Binary(accel_core::ir::BinaryOp::Add))
            && matches!(add.kernel, Kernel::Core);
        let (Some(Some(Slot::Value(x))), Some(Some(Slot::Value(y)))) =
            (add.inputs.first(), add.inputs.get(1))
        else {
            continue;
        };
        if !is_add || add.inputs.len() != 2 {
            continue;
        }
        for (i, (a, r)) in [(*x, *y), (*y, *x)].into_iter().enumerate() {
            let Some(&s) = producer.get(&a) else { continue };
            let conv = &steps[s];
            let a_name = &add.node.inputs[i];
            let r_name = &add.node.inputs[1 - i];
            let r_ready = r < num_inputs || producer.get(&r).is_some_and(|&p| p < s);
            let fits = matches!(conv.kernel, Kernel::Conv(_))
                && !removed[s]
                && conv.inputs.len() <= 3
                && conv.outputs == [Some(a)]
                && uses.get(&a) == Some(&1)
                && !graph.is_graph_output(a_name)
                && r_ready
                && same_f32_shape(a_name, r_name);
            if fits {
                let (outs, names) = (add.outputs.clone(), add.node.outputs.clone());
                let conv = &mut steps[s];
                conv.inputs.resize(3, None);
                conv.inputs.push(Some(Slot::Value(r)));
                conv.outputs = outs;
                conv.node.outputs = names;
                removed[t] = true;
                break;
            }
        }
    }
    remove_steps(steps, &removed);
}

/// The last two axes of a rank-4 value, where the graph fixes them.
fn spatial_hw(graph: &Graph, name: &str) -> Option<[usize; 2]> {
    match graph.value_type(name)?.shape?.as_slice() {
        [_, _, h, w] => Some([h.known()?, w.known()?]),
        _ => None,
    }
}

/// Takes a 2x2 MaxPool at stride 2 into the Conv before it when the conv's output feeds
/// only that pool ([`ConvKernel::fuse_max_pool`]): the CRNN's conv1 + pool1 and conv2 +
/// pool2. The Conv step then writes the pool's output.
fn fuse_max_pools(graph: &Graph, steps: &mut Vec<Step>) {
    let (producer, uses) = producers_and_uses(steps);
    let mut removed = vec![false; steps.len()];
    for t in 0..steps.len() {
        let Op::MaxPool(pool) = &steps[t].node.op else {
            continue;
        };
        let (Some(Some(Slot::Value(x))), 1) = (steps[t].inputs.first(), steps[t].inputs.len())
        else {
            continue;
        };
        let Some(&s) = producer.get(x) else { continue };
        let conv_out = &steps[t].node.inputs[0];
        let single_reader = uses.get(x) == Some(&1) && !graph.is_graph_output(conv_out);
        if removed[s]
            || !single_reader
            || steps[s].outputs != [Some(*x)]
            || steps[s].inputs.len() > 3
        {
            continue;
        }
        let pool = pool.clone();
        let (outs, names) = (steps[t].outputs.clone(), steps[t].node.outputs.clone());
        let conv = &mut steps[s];
        let Kernel::Conv(k) = &mut conv.kernel else {
            continue;
        };
        if k.fuse_max_pool(&pool) {
            conv.outputs = outs;
            conv.node.outputs = names;
            removed[t] = true;
        }
    }
    remove_steps(steps, &removed);
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
                let in_hw = node.input(0).and_then(|x| spatial_hw(graph, x));
                Kernel::ConvTranspose(ConvTransposeKernel::new(node, a, w, c(2), in_hw)?)
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
    let x = || require(node, ins, 0).map(Tensor::view);
    let opt = |i: usize| ins.get(i).copied().flatten().map(Tensor::view);
    match &step.kernel {
        Kernel::Conv(k) => Ok(vec![k.run(node, x()?, opt(3))?]),
        Kernel::ConvTranspose(k) => Ok(vec![k.run(node, x()?)?]),
        Kernel::MatMul(k) => {
            require_f32(node, ins)?;
            Ok(vec![k.run(node, x()?, require(node, ins, 1)?.view())?])
        }
        Kernel::Gemm(k) => {
            require_f32(node, ins)?;
            Ok(vec![k.run(
                node,
                x()?,
                require(node, ins, 1)?.view(),
                opt(2),
            )?])
        }
        Kernel::Lstm(k) => {
            require_f32(node, ins)?;
            k.run(node, x()?, opt(4), opt(5), opt(6))
        }
        Kernel::Dynamic => {
            require_f32(node, ins)?;
            let w = require(node, ins, 1)?;
            let b = ins.get(2).copied().flatten();
            match &node.op {
                Op::Conv(a) => Ok(vec![ConvKernel::new(node, a, w, b)?.run(
                    node,
                    x()?,
                    None,
                )?]),
                Op::ConvTranspose(a) => {
                    let x = x()?;
                    let in_hw = match x.shape() {
                        &[_, _, h, w] => Some([h, w]),
                        _ => None,
                    };
                    Ok(vec![
                        ConvTransposeKernel::new(node, a, w, b, in_hw)?.run(node, x)?,
                    ])
                }
                Op::Lstm(l) => {
                    let r = require(node, ins, 2)?;
                    let b = ins.get(3).copied().flatten();
                    LstmKernel::new(node, l, w, r, b)?.run(node, x()?, opt(4), opt(5), opt(6))
                }
                _ => unreachable!("only convs and LSTM compile to Dynamic"),
            }
        }
        Kernel::Pool { max } => {
            require_f32(node, ins)?;
            Ok(vec![pool(node, pool_attrs(node), *max, x()?)?])
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

fn pool_attrs(node: &Node) -> &accel_core::ir::Pool {
    match &node.op {
        Op::MaxPool(p) | Op::AveragePool(p) => p,
        _ => unreachable!("Pool kernels come from pool ops"),
    }
}

/// Ops whose output is their input seen with another shape.
fn is_reshape(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Flatten { .. } | Op::Identity
    )
}

impl CpuExecutable {
    /// Runs allocating every value, as the first run of each input-shape signature does;
    /// `record` collects what the memory plan needs.
    fn run_allocating<'s>(
        &'s self,
        inputs: &[TensorView],
        mut record: Option<&mut Recording>,
        times: &mut Vec<(f64, &'s str, &'s str)>,
    ) -> Result<Vec<Tensor>> {
        let mut env: Vec<Option<Tensor>> = (0..self.num_values).map(|_| None).collect();
        for (slot, t) in env.iter_mut().zip(inputs) {
            *slot = Some(t.to_tensor());
        }
        for step in &self.steps {
            let t0 = self.profile.then(std::time::Instant::now);
            // Reshape-like ops may take their input instead of copying it.
            let movable = matches!(
                step.node.op,
                Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze
            );
            let owned_x = match step.inputs.first() {
                Some(Some(Slot::Value(v))) if movable && step.frees.contains(v) => env[*v].take(),
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
                    if let Some(r) = record.as_deref_mut() {
                        r.types[*s] = Some((t.dtype(), t.shape().to_vec()));
                        if self.shape_only[*s] {
                            r.statics[*s] = Some(Arc::new(t.clone()));
                        }
                    }
                    env[*s] = Some(t);
                }
            }
            for v in &step.frees {
                env[*v] = None;
            }
            if let Some(t0) = t0 {
                times.push(step_time(t0, step));
            }
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

    /// Values written straight into the Concat that alone takes them, as (the Concat's
    /// output, offset in it): at batch 1 a Concat along channels (every axis before its
    /// axis of size 1) lays its inputs end to end, so each producer can write its part of
    /// the output and the Concat is skipped (the U-Net's skip connections: 0.09 ms of
    /// copies at one thread). All of a Concat's inputs go in place or none: each must be
    /// an f32 arena value of its own (produced by a kernel, not a reshaped view), read by
    /// this Concat once, and start on an arena alignment boundary.
    fn concat_members(&self, rec: &Recording, is_output: &[bool]) -> Vec<Option<(usize, usize)>> {
        let nv = self.num_values;
        let mut members: Vec<Option<(usize, usize)>> = vec![None; nv];
        let mut producer: Vec<Option<&Step>> = vec![None; nv];
        for step in &self.steps {
            for &v in step.outputs.iter().flatten() {
                producer[v] = Some(step);
            }
        }
        let arena_f32 = |v: usize| {
            v >= self.inputs.len()
                && !is_output[v]
                && rec.statics[v].is_none()
                && rec.types[v].as_ref().is_some_and(|(d, _)| *d == DType::F32)
        };
        for step in &self.steps {
            let (Op::Concat { axis }, Kernel::Core, [Some(c)]) =
                (&step.node.op, &step.kernel, step.outputs.as_slice())
            else {
                continue;
            };
            let Some((_, shape)) = rec.types[*c].as_ref() else {
                continue;
            };
            let rank = shape.len() as i64;
            let axis = if *axis < 0 { axis + rank } else { *axis };
            if !arena_f32(*c) || !(0..rank).contains(&axis) {
                continue;
            }
            if shape[..axis as usize].iter().any(|&d| d != 1) {
                continue;
            }
            let mut parts = Vec::with_capacity(step.inputs.len());
            let mut at = 0;
            for slot in &step.inputs {
                let Some(Slot::Value(u)) = slot else { break };
                let Some((_, s)) = rec.types[*u].as_ref() else {
                    break;
                };
                let once = step
                    .inputs
                    .iter()
                    .filter(|o| matches!(o, Some(Slot::Value(w)) if w == u))
                    .count()
                    == 1;
                let own_region = producer[*u].is_some_and(|p| match p.kernel {
                    Kernel::Dynamic => false,
                    Kernel::Core => !is_reshape(&p.node.op),
                    _ => true,
                });
                // (A Concat taking another's output in place would nest regions.)
                let holds_others = members.iter().any(|m| m.is_some_and(|(r, _)| r == *u));
                if !(arena_f32(*u) && once && own_region && members[*u].is_none()) || holds_others {
                    break;
                }
                if at % crate::memory::ALIGN != 0 {
                    break;
                }
                parts.push((*u, at));
                at += numel(s);
            }
            if parts.len() == step.inputs.len() && at == numel(shape) {
                for (u, offset) in parts {
                    members[u] = Some((*c, offset));
                }
            }
        }
        members
    }

    /// Places every value from what a recording run saw. None when a step that still runs
    /// reads an integer or bool value that is not fixed by the input shapes (a graph input,
    /// or one computed from data): it could set a Reshape target, Slice bounds and the like,
    /// so the next run's shapes need not be the recorded ones.
    fn build_plan(&self, rec: Recording) -> Option<MemoryPlan> {
        let nv = self.num_values;
        let mut places: Vec<Place> = vec![Place::Unused; nv];
        for (i, p) in places.iter_mut().enumerate().take(self.inputs.len()) {
            *p = Place::Input(i);
        }
        let is_output: Vec<bool> = (0..nv)
            .map(|v| {
                self.outputs
                    .iter()
                    .any(|s| matches!(s, Slot::Value(o) if *o == v))
            })
            .collect();
        let members = self.concat_members(&rec, &is_output);
        // Arena values: the root value whose region it shares and its offset in there; a
        // root's region is needed from the first step producing any of its values.
        let mut root: Vec<Option<(usize, usize)>> = vec![None; nv];
        let mut first: Vec<usize> = vec![usize::MAX; nv];
        let mut skip = vec![false; self.steps.len()];
        for (si, step) in self.steps.iter().enumerate() {
            let mut all_static = true;
            for &v in step.outputs.iter().flatten() {
                let Some((dtype, shape)) = rec.types[v].clone() else {
                    all_static = false;
                    continue;
                };
                if let Some(t) = rec.statics[v].clone() {
                    places[v] = Place::Static(t);
                    continue;
                }
                all_static = false;
                if is_output[v] || dtype != DType::F32 {
                    places[v] = Place::Owned((dtype == DType::F32).then_some(shape));
                    continue;
                }
                places[v] = match &step.kernel {
                    Kernel::Core if is_reshape(&step.node.op) => match step.inputs.first() {
                        Some(Some(Slot::Value(u))) => match &places[*u] {
                            Place::Arena { .. } => {
                                root[v] = root[*u];
                                Place::Arena { offset: 0, shape }
                            }
                            Place::Input(i) | Place::InputView(i, _) => Place::InputView(*i, shape),
                            _ => Place::Owned(None),
                        },
                        _ => Place::Owned(None),
                    },
                    Kernel::Dynamic => Place::Owned(None),
                    _ => {
                        let at = members[v].unwrap_or((v, 0));
                        root[v] = Some(at);
                        first[at.0] = first[at.0].min(si);
                        Place::Arena { offset: 0, shape }
                    }
                };
            }
            // A Concat whose inputs were written in place has nothing left to do.
            let in_place = step.outputs.first().copied().flatten().is_some_and(|c| {
                step.inputs
                    .iter()
                    .flatten()
                    .any(|s| matches!(s, Slot::Value(u) if members[*u].is_some_and(|m| m.0 == c)))
            });
            skip[si] = in_place || (all_static && step.outputs.iter().flatten().next().is_some());
        }
        // A region lives from its first producer to the last reader of any value sharing it.
        let mut last: Vec<usize> = first.clone();
        for (v, r) in root.iter().enumerate() {
            if let Some((r, _)) = *r {
                last[r] = last[r].max(self.last_use[v].unwrap_or(first[r]));
            }
        }
        let roots: Vec<usize> = (0..nv).filter(|&v| root[v] == Some((v, 0))).collect();
        let lifetimes: Vec<Lifetime> = roots
            .iter()
            .map(|&r| Lifetime {
                first: first[r],
                last: last[r],
                len: match &places[r] {
                    Place::Arena { shape, .. } => numel(shape),
                    _ => 0,
                },
            })
            .collect();
        let varies = |v: usize| {
            let dtype = match v < self.inputs.len() {
                true => Some(self.inputs[v].dtype),
                false => rec.types[v].as_ref().map(|(d, _)| *d),
            };
            !matches!(places[v], Place::Static(_)) && dtype.is_some_and(|d| !d.is_float())
        };
        let shapes_fixed = self.steps.iter().enumerate().all(|(si, s)| {
            skip[si]
                || s.inputs
                    .iter()
                    .flatten()
                    .all(|slot| !matches!(slot, Slot::Value(v) if varies(*v)))
        });
        if !shapes_fixed {
            return None;
        }
        let (offsets, arena_len) = plan(&lifetimes);
        let root_offset: HashMap<usize, usize> = roots.into_iter().zip(offsets).collect();
        for v in 0..nv {
            if let (Some((r, at)), Place::Arena { offset, .. }) = (root[v], &mut places[v]) {
                *offset = root_offset[&r] + at;
            }
        }
        Some(MemoryPlan {
            places,
            arena_len,
            skip,
        })
    }

    /// Runs with every intermediate value in `arena`, laid out by `plan`. Graph output k
    /// goes into `dest[k]` when given (and not read by any step) and is then returned as
    /// `None`.
    fn run_planned<'s>(
        &'s self,
        plan: &MemoryPlan,
        arena: &mut [f32],
        inputs: &[TensorView],
        times: &mut Vec<(f64, &'s str, &'s str)>,
        dest: &mut [Option<&mut [f32]>],
    ) -> Result<Vec<Option<Tensor>>> {
        let mut written = vec![false; self.outputs.len()];
        assert!(arena.len() >= plan.arena_len, "arena smaller than its plan");
        let base = arena.as_mut_ptr();
        // Values allocated by their producers (Owned): few, so a short list rather than a slot
        // per value.
        let mut env: Vec<(usize, Tensor)> = Vec::new();
        for (si, step) in self.steps.iter().enumerate() {
            if plan.skip[si] {
                continue;
            }
            let t0 = self.profile.then(std::time::Instant::now);
            let region = |offset: usize, shape: &[usize]| -> *mut f32 {
                debug_assert!(offset + numel(shape) <= plan.arena_len);
                // SAFETY: offset + numel(shape) <= arena_len <= arena.len() (planned so).
                unsafe { base.add(offset) }
            };
            let view = |slot: &Slot| -> Result<TensorView> {
                let v = match slot {
                    Slot::Const(c) => return Ok(self.consts[*c].view()),
                    Slot::Value(v) => *v,
                };
                Ok(match &plan.places[v] {
                    Place::Input(i) => inputs[*i],
                    Place::InputView(i, shape) => {
                        TensorView::from_slice(shape, inputs[*i].as_slice::<f32>()?)?
                    }
                    Place::Arena { offset, shape } => {
                        // SAFETY: the planner gives values alive at the same step disjoint
                        // regions; this value was written by its producer and is only read
                        // from now on, while this step writes only its own outputs' regions.
                        let data = unsafe {
                            std::slice::from_raw_parts(region(*offset, shape), numel(shape))
                        };
                        TensorView::from_slice(shape, data)?
                    }
                    Place::Static(t) => t.view(),
                    Place::Owned(_) => env
                        .iter()
                        .find(|(u, _)| *u == v)
                        .ok_or_else(|| plan_broken("a value was read before it was computed"))?
                        .1
                        .view(),
                    Place::Unused => {
                        return Err(plan_broken("a step read a value that was never planned"));
                    }
                })
            };
            let ins: Vec<Option<TensorView>> = step
                .inputs
                .iter()
                .map(|s| s.as_ref().map(view).transpose())
                .collect::<Result<_>>()?;
            // Output regions; None for outputs allocated by the step (Owned) or not kept.
            // Graph outputs this step may write into `dest`: (its output index, k).
            let mut into_dest: Vec<(usize, usize)> = Vec::new();
            let out_regions: Vec<Option<&mut [f32]>> = step
                .outputs
                .iter()
                .enumerate()
                .map(|(i, o)| match o.map(|v| (v, &plan.places[v])) {
                    Some((_, Place::Arena { offset, shape })) => {
                        // SAFETY: as above: this region belongs to this output alone while
                        // the step runs (outputs and inputs are alive together, so disjoint).
                        Some(unsafe {
                            std::slice::from_raw_parts_mut(region(*offset, shape), numel(shape))
                        })
                    }
                    Some((v, Place::Owned(Some(shape)))) => {
                        let k = self.dest_outputs.iter().position(|&d| d == Some(v))?;
                        let d = dest.get_mut(k)?.take_if(|d| d.len() == numel(shape))?;
                        into_dest.push((i, k));
                        Some(d)
                    }
                    _ => None,
                })
                .collect();
            let aliased = is_reshape(&step.node.op)
                && step.outputs.iter().flatten().all(|&v| {
                    matches!(
                        plan.places[v],
                        Place::Arena { .. } | Place::InputView(..) | Place::Static(_)
                    )
                });
            let owned = if aliased {
                vec![]
            } else {
                self.step_into(plan, step, &ins, out_regions)?
            };
            // A kernel that could not write into its region returned a new buffer instead.
            for (i, k) in into_dest {
                written[k] = owned.get(i).is_none_or(Option::is_none);
            }
            for (o, t) in step.outputs.iter().zip(owned) {
                if let (Some(v), Some(t)) = (o, t) {
                    env.push((*v, t));
                }
            }
            env.retain(|(v, _)| !step.frees.contains(v));
            if let Some(t0) = t0 {
                times.push(step_time(t0, step));
            }
        }
        self.outputs
            .iter()
            .zip(written)
            .map(|(s, written)| match s {
                _ if written => Ok(None),
                Slot::Const(c) => Ok(Some(self.consts[*c].as_ref().clone())),
                Slot::Value(v) => match &plan.places[*v] {
                    Place::Owned(_) => env
                        .iter()
                        .position(|(u, _)| u == v)
                        .map(|i| Some(env.swap_remove(i).1))
                        .ok_or_else(|| Error::Other("an output was not computed".into())),
                    Place::Input(i) => Ok(Some(inputs[*i].to_tensor())),
                    Place::Static(t) => Ok(Some(t.as_ref().clone())),
                    _ => Err(plan_broken("an output was planned into the arena")),
                },
            })
            .collect()
    }

    /// One step of a planned run: writes outputs that have a region into it and returns the
    /// others (in output order; None where written to a region).
    fn step_into(
        &self,
        plan: &MemoryPlan,
        step: &Step,
        ins: &[Option<TensorView>],
        mut regions: Vec<Option<&mut [f32]>>,
    ) -> Result<Vec<Option<Tensor>>> {
        let node = &step.node;
        let x = || {
            ins.first()
                .copied()
                .flatten()
                .ok_or_else(|| Error::node(node, "input 0 is required"))
        };
        let opt = |i: usize| ins.get(i).copied().flatten();
        // A single f32 output goes into its region, or into a new buffer when it is returned.
        let mut fresh: Option<(Vec<f32>, &Vec<usize>)> = match (
            regions.first().map(Option::is_some),
            step.outputs
                .first()
                .copied()
                .flatten()
                .map(|v| &plan.places[v]),
        ) {
            (Some(false), Some(Place::Owned(Some(shape))))
                if regions.len() == 1
                    && !matches!(step.kernel, Kernel::Lstm(_) | Kernel::Dynamic) =>
            {
                Some((vec![0.0; numel(shape)], shape))
            }
            _ => None,
        };
        if regions.len() == 1 && (regions[0].is_some() || fresh.is_some()) {
            let out: &mut [f32] = match (regions[0].as_deref_mut(), fresh.as_mut()) {
                (Some(r), _) => r,
                (None, Some((buf, _))) => buf,
                (None, None) => unreachable!("checked above"),
            };
            let done = match &step.kernel {
                Kernel::Conv(k) => k.run_into(node, x()?, opt(3), out).map(|_| true)?,
                Kernel::ConvTranspose(k) => k.run_into(node, x()?, out).map(|_| true)?,
                Kernel::MatMul(k) => {
                    let b = opt(1).ok_or_else(|| Error::node(node, "input 1 is required"))?;
                    k.run_into(node, x()?, b, out).map(|_| true)?
                }
                Kernel::Gemm(k) => {
                    let b = opt(1).ok_or_else(|| Error::node(node, "input 1 is required"))?;
                    k.run_into(node, x()?, b, opt(2), out).map(|_| true)?
                }
                Kernel::Pool { max } => {
                    let x = x()?;
                    let shape = pool_shape(node, pool_attrs(node), x.shape())?;
                    if numel(&shape) == out.len() {
                        pool_into(node, pool_attrs(node), *max, x, out)?;
                        true
                    } else {
                        false
                    }
                }
                Kernel::Core => match step.outputs[0].map(|v| &plan.places[v]) {
                    Some(Place::Arena { shape, .. } | Place::Owned(Some(shape))) => {
                        match per_image(node, ins, shape, out) {
                            Some(done) => done?,
                            None => ops::eval_f32_into(node, ins, shape, out)?,
                        }
                    }
                    _ => false,
                },
                Kernel::Lstm(_) | Kernel::Dynamic => false,
            };
            if done {
                return Ok(vec![match fresh {
                    Some((buf, shape)) => Some(Tensor::from_vec(shape.clone(), buf)?),
                    None => None,
                }]);
            }
        }
        if let Kernel::Lstm(k) = &step.kernel {
            // Y, Y_h, Y_c: each into its region, a new buffer when returned, or not at all.
            let mut fresh: Vec<Option<(Vec<f32>, &Vec<usize>)>> = (0..3)
                .map(
                    |i| match (regions.get(i).map(Option::is_some), step.outputs.get(i)) {
                        (Some(false), Some(Some(v))) => match &plan.places[*v] {
                            Place::Owned(Some(shape)) => Some((vec![0.0; numel(shape)], shape)),
                            _ => None,
                        },
                        _ => None,
                    },
                )
                .collect();
            let mut regions = regions.into_iter();
            let mut fresh_it = fresh.iter_mut();
            let outs: [Option<&mut [f32]>; 3] = std::array::from_fn(|_| {
                let r = regions.next().flatten();
                let f = fresh_it
                    .next()
                    .and_then(|f| f.as_mut().map(|(b, _)| &mut b[..]));
                r.or(f)
            });
            k.run_into(node, x()?, opt(4), opt(5), opt(6), outs)?;
            return fresh
                .into_iter()
                .take(step.outputs.len())
                .map(|f| {
                    f.map(|(buf, shape)| Tensor::from_vec(shape.clone(), buf))
                        .transpose()
                })
                .collect();
        }
        // Everything else computes with allocated tensors; results with a region are copied
        // into it.
        let owned_ins: Vec<Option<Tensor>> = ins.iter().map(|v| v.map(|v| v.to_tensor())).collect();
        let refs: Vec<Option<&Tensor>> = owned_ins.iter().map(Option::as_ref).collect();
        let outs = run_step(step, &refs, None)?;
        outs.into_iter()
            .zip(
                regions
                    .iter_mut()
                    .map(Option::take)
                    .chain(std::iter::repeat_with(|| None)),
            )
            .map(|(t, region)| match region {
                Some(r) => match t.as_slice::<f32>() {
                    Ok(v) if v.len() == r.len() => {
                        r.copy_from_slice(v);
                        Ok(None)
                    }
                    _ => Err(plan_broken(&format!(
                        "{} produced {:?} {} where {} f32 values were planned",
                        node.name,
                        t.shape(),
                        t.dtype(),
                        r.len()
                    ))),
                },
                None => Ok(Some(t)),
            })
            .collect()
    }
}

/// Runs `f` on the calling worker while the pool's other workers wait for work by spinning
/// (taking any job the moment it is queued) instead of sleeping. A run is a chain of short
/// parallel operators; a sleeping worker is woken by the kernel for each one, which on a VM
/// takes tens of microseconds, about as long as a small operator itself.
///
/// A spinner blocks whatever job it was started inside, so it gives up: at once on the
/// caller's thread or inside another spinner, and after [`SPIN_IDLE_LIMIT`] without work
/// (a worker that took it while waiting inside a job, as with concurrent runs, stalls that
/// long at worst and never deadlocks). The spinning ends with the run.
fn with_hot_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    thread_local! {
        static SPINNING: Cell<bool> = const { Cell::new(false) };
    }
    struct ClearOnDrop;
    impl Drop for ClearOnDrop {
        fn drop(&mut self) {
            SPINNING.set(false);
        }
    }
    /// Ends the spinning however `f` ends, a panic included.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let others = rayon::current_num_threads().saturating_sub(1);
    if others == 0 {
        return f();
    }
    let caller = rayon::current_thread_index();
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        for _ in 0..others {
            s.spawn(|_| {
                if rayon::current_thread_index() == caller || SPINNING.get() {
                    return;
                }
                SPINNING.set(true);
                // Cleared however the loop ends (a job it ran may panic).
                let _spinning = ClearOnDrop;
                let mut last_work = Instant::now();
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        last_work = Instant::now();
                    } else if last_work.elapsed() > SPIN_IDLE_LIMIT {
                        break;
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        let _done = Done(&done);
        f()
    })
}

/// How long a spinning worker waits without work before it sleeps: longer than the serial
/// stretches between the parallel operators of a run.
const SPIN_IDLE_LIMIT: std::time::Duration = std::time::Duration::from_micros(500);

impl CpuExecutable {
    /// Sub-batch sizes when this run's batch goes image-parallel (see `images`).
    fn batch_split(&self, inputs: &[TensorView]) -> Option<Vec<usize>> {
        let n = *inputs.first()?.shape().first()?;
        if inputs.iter().any(|t| t.shape().first() != Some(&n)) {
            return None;
        }
        self.image_split(n)
    }

    /// One sub-batch per image pool, run side by side. Planned sub-batches write their
    /// outputs straight into the batch's; others are joined by a copy.
    fn run_split(&self, inputs: &[TensorView], sizes: &[usize]) -> Result<Vec<Tensor>> {
        let shapes: Vec<Vec<Vec<usize>>> = sizes
            .iter()
            .map(|&count| {
                inputs
                    .iter()
                    .map(|t| [&[count], &t.shape()[1..]].concat())
                    .collect()
            })
            .collect();
        let mut parts = Vec::with_capacity(sizes.len());
        let mut start = 0;
        for (shapes, &count) in shapes.iter().zip(sizes) {
            let views = inputs
                .iter()
                .zip(shapes)
                .map(|(t, shape)| images::images(t, start, shape))
                .collect::<Result<Vec<_>>>()?;
            parts.push(views);
            start += count;
        }
        self.provision_arenas(&parts);
        // The whole batch's f32 outputs, where every sub-batch's plan knows their shape.
        let n: usize = sizes.iter().sum();
        let mut whole: Vec<Option<(Vec<usize>, Vec<f32>)>> = self
            .planned_output_images(&parts)
            .into_iter()
            .map(|image| image.map(|d| ([&[n], &d[..]].concat(), vec![0.0; n * numel(&d)])))
            .collect();
        // Per sub-batch, its slice of each such output.
        let mut dests: Vec<Vec<Option<&mut [f32]>>> = sizes.iter().map(|_| vec![]).collect();
        for out in whole.iter_mut() {
            let Some((shape, data)) = out else {
                dests.iter_mut().for_each(|d| d.push(None));
                continue;
            };
            let image = numel(&shape[1..]);
            let mut rest = &mut data[..];
            for (&count, dest) in sizes.iter().zip(dests.iter_mut()) {
                let (mine, others) = std::mem::take(&mut rest).split_at_mut(count * image);
                dest.push(Some(mine));
                rest = others;
            }
        }
        let mut results: Vec<Option<Result<Vec<Option<Tensor>>>>> =
            sizes.iter().map(|_| None).collect();
        // The executable's own workers only wait here: each hands its sub-batch to a
        // one-thread pool, whose kernels then run serially.
        self.pool.scope(|s| {
            let jobs = self.image_pools.iter().zip(&parts).zip(dests.iter_mut());
            for (((pool, views), dest), slot) in jobs.zip(&mut results) {
                s.spawn(move |_| *slot = Some(self.run_in(pool, views, dest)));
            }
        });
        drop(dests);
        let outputs: Vec<Vec<Option<Tensor>>> = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Other("a sub-batch did not run".into()))))
            .collect::<Result<_>>()?;
        let missing = || Error::Other("a sub-batch output was not computed".into());
        whole
            .into_iter()
            .enumerate()
            .map(|(k, whole)| match whole {
                Some((shape, mut data)) => {
                    // Sub-batches that ran without a plan (evicted meanwhile) allocated.
                    let image = numel(&shape[1..]);
                    let mut at = 0;
                    for (out, &count) in outputs.iter().zip(sizes) {
                        let len = count * image;
                        if let Some(t) = &out[k] {
                            let src = t.as_slice::<f32>()?;
                            if src.len() != len {
                                return Err(plan_broken("a sub-batch output changed size"));
                            }
                            data[at..at + len].copy_from_slice(src);
                        }
                        at += len;
                    }
                    Tensor::from_vec(shape, data)
                }
                None => {
                    let ts: Vec<&Tensor> = outputs
                        .iter()
                        .map(|o| o[k].as_ref().ok_or_else(missing))
                        .collect::<Result<_>>()?;
                    ops::concat(&ts, 0)
                }
            })
            .collect()
    }

    /// Gives each planned sub-batch of `parts` an idle arena before they start, so that how
    /// the sub-batches happen to overlap never decides whether a run allocates one.
    fn provision_arenas(&self, parts: &[Vec<TensorView>]) {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        for (i, views) in parts.iter().enumerate() {
            let key: Vec<(DType, Vec<usize>)> = views
                .iter()
                .map(|t| (t.dtype(), t.shape().to_vec()))
                .collect();
            let sharing = parts[..=i]
                .iter()
                .filter(|other| {
                    other.len() == key.len()
                        && other
                            .iter()
                            .zip(&key)
                            .all(|(t, (dtype, shape))| t.dtype() == *dtype && t.shape() == shape)
                })
                .count();
            if let Some(p) = plans.iter_mut().find(|p| p.key == key)
                && let Some(plan) = &p.plan
                && p.idle.len() < sharing
            {
                p.idle.push(vec![0.0; plan.arena_len]);
            }
        }
    }

    /// Per graph output, its per-image dims when the plan of every sub-batch in `parts`
    /// allocates it as f32 and it can go straight into a buffer (see `dest_outputs`).
    fn planned_output_images(&self, parts: &[Vec<TensorView>]) -> Vec<Option<Vec<usize>>> {
        let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let part_plans: Vec<Option<&MemoryPlan>> = parts
            .iter()
            .map(|views| {
                let key: Vec<(DType, Vec<usize>)> = views
                    .iter()
                    .map(|t| (t.dtype(), t.shape().to_vec()))
                    .collect();
                plans.iter().find(|p| p.key == key)?.plan.as_deref()
            })
            .collect();
        self.dest_outputs
            .iter()
            .map(|v| {
                let v = (*v)?;
                let mut image: Option<Vec<usize>> = None;
                for (plan, views) in part_plans.iter().zip(parts) {
                    let Place::Owned(Some(shape)) = &plan.as_ref()?.places[v] else {
                        return None;
                    };
                    let count = views.first()?.shape().first()?;
                    if shape.first() != Some(count)
                        || image.as_ref().is_some_and(|d| d[..] != shape[1..])
                    {
                        return None;
                    }
                    image = Some(shape[1..].to_vec());
                }
                image
            })
            .collect()
    }

    /// The run with every kernel's work spread over `pool`; a planned run writes graph
    /// outputs into `dest` where it can (see `run_planned`), returning `None` for them.
    fn run_in(
        &self,
        pool: &rayon::ThreadPool,
        inputs: &[TensorView],
        dest: &mut [Option<&mut [f32]>],
    ) -> Result<Vec<Option<Tensor>>> {
        let key: Vec<(DType, Vec<usize>)> = inputs
            .iter()
            .map(|t| (t.dtype(), t.shape().to_vec()))
            .collect();
        let mut times: Vec<(f64, &str, &str)> = Vec::new();
        let planned = {
            let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
            plans.iter_mut().find(|p| p.key == key).map(|p| {
                let arena = p.idle.pop().unwrap_or_default();
                (p.plan.clone(), arena)
            })
        };
        let outputs = match planned {
            Some((None, _)) => pool
                .install(|| with_hot_workers(|| self.run_allocating(inputs, None, &mut times)))?
                .into_iter()
                .map(Some)
                .collect(),
            Some((Some(plan), mut arena)) => {
                if arena.len() < plan.arena_len {
                    arena = vec![0.0; plan.arena_len];
                }
                let out = pool.install(|| {
                    with_hot_workers(|| {
                        self.run_planned(&plan, &mut arena, inputs, &mut times, dest)
                    })
                });
                let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(p) = plans.iter_mut().find(|p| p.key == key) {
                    p.idle.push(arena);
                }
                out?
            }
            None => {
                let mut rec = Recording {
                    types: vec![None; self.num_values],
                    statics: vec![None; self.num_values],
                };
                let out = pool.install(|| {
                    with_hot_workers(|| self.run_allocating(inputs, Some(&mut rec), &mut times))
                })?;
                let plan = self.build_plan(rec).map(Arc::new);
                let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
                if !plans.iter().any(|p| p.key == key) {
                    if plans.len() >= MAX_PLANS {
                        plans.remove(0);
                    }
                    plans.push(PlanSlot {
                        key,
                        plan,
                        idle: vec![],
                    });
                }
                out.into_iter().map(Some).collect()
            }
        };
        if self.profile {
            print_profile(&mut times);
        }
        Ok(outputs)
    }
}

impl Executable for CpuExecutable {
    fn run(&self, inputs: &[TensorView]) -> Result<Vec<Tensor>> {
        check_inputs(&self.inputs, inputs)?;
        if let Some(sizes) = self.batch_split(inputs) {
            return self.run_split(inputs, &sizes);
        }
        let mut dest: Vec<Option<&mut [f32]>> = self.outputs.iter().map(|_| None).collect();
        self.run_in(&self.pool, inputs, &mut dest)?
            .into_iter()
            .map(|t| t.ok_or_else(|| Error::Other("an output was not computed".into())))
            .collect()
    }

    fn memory(&self) -> MemoryStats {
        let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        MemoryStats {
            weights: Some(self.weight_bytes()),
            // Sub-batches of an image-parallel run each hold an arena of their plan.
            arena: plans
                .iter()
                .filter_map(|p| Some(p.plan.as_ref()?.arena_len * 4 * p.idle.len().max(1)))
                .max(),
            scratch: Some(self.scratch.iter().map(|p| p.held_bytes()).sum()),
        }
    }
}

/// An invariant of the memory plan did not hold: a bug in accel, not in the model.
fn plan_broken(what: &str) -> Error {
    Error::Other(format!(
        "internal error in the CPU backend's memory plan: {what} (please report it with the model)"
    ))
}

/// (milliseconds, op, node name) of a step that started at `t0`, for the profile.
fn step_time(t0: std::time::Instant, step: &Step) -> (f64, &str, &str) {
    (
        t0.elapsed().as_secs_f64() * 1e3,
        step.node.op.name(),
        &step.node.name,
    )
}

/// `ACCEL_CPU_PROFILE=1`: per-node times of each run, slowest first, on stderr (the 15
/// slowest; `ACCEL_CPU_PROFILE=all` lists every step).
fn print_profile(times: &mut [(f64, &str, &str)]) {
    let total: f64 = times.iter().map(|t| t.0).sum();
    times.sort_by(|a, b| b.0.total_cmp(&a.0));
    eprintln!("accel-cpu profile: {total:.3} ms in {} steps", times.len());
    let all = std::env::var("ACCEL_CPU_PROFILE").is_ok_and(|v| v == "all");
    for (ms, op, name) in times.iter().take(if all { usize::MAX } else { 15 }) {
        eprintln!(
            "  {ms:8.3} ms  {:5.1}%  {op:<16} {name}",
            100.0 * ms / total.max(1e-9)
        );
    }
}
