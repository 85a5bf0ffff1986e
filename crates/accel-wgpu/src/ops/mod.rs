//! Lowering: each node of a graph specialised to concrete shapes becomes dispatches of the
//! kernels over logical buffers, which the planner (`program.rs`) then maps onto device
//! buffers. One module per operator family, like the kernels.

mod conv;
mod elementwise;
mod layout;
mod lstm;
mod matmul;
mod pool;
mod softmax;

use crate::device::Gpu;
use crate::kernels::{Family, Kernel, Storage};
use accel_core::half;
use accel_core::ir::Activation;
use accel_core::ops::ResolvedWindow;
use accel_core::{DType, Error, Graph, Node, Op, Result, Tensor};
use std::collections::HashMap;
use wgpu::util::DeviceExt;

const TO_HALF: Kernel = Kernel {
    family: Family::Convert,
    entry: "to_half",
};

/// What a kernel binding reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operand {
    /// A constant uploaded at compile time.
    Const(usize),
    /// A logical buffer (a value, or a temporary of one node).
    Value(usize),
}

/// One kernel dispatch: its parameters, what it binds (binding 0 is always the parameters),
/// and its grid.
pub(crate) struct Dispatch {
    pub node: usize,
    pub kernel: Kernel,
    /// The storage its tensors are in (the pipeline variant).
    pub storage: Storage,
    pub params: Vec<u32>,
    pub bindings: Vec<(u32, Operand)>,
    pub groups: [u32; 3],
}

/// Constants on the device, uploaded once per executable and shared by the programs of every
/// input shape: weights, and what lowerings derive from them (summed LSTM biases, zero
/// biases), each in the storage of the nodes that read it.
pub(crate) struct Consts {
    pub buffers: Vec<wgpu::Buffer>,
    by_key: HashMap<(String, Storage), usize>,
    pub bytes: usize,
}

impl Consts {
    pub fn new() -> Consts {
        Consts {
            buffers: Vec::new(),
            by_key: HashMap::new(),
            bytes: 0,
        }
    }

    fn get_or_upload(
        &mut self,
        gpu: &Gpu,
        key: &str,
        storage: Storage,
        data: impl FnOnce() -> Result<Vec<f32>>,
    ) -> Result<usize> {
        let entry = (key.to_string(), storage);
        if let Some(&i) = self.by_key.get(&entry) {
            return Ok(i);
        }
        let values = data()?;
        let contents = encode(storage, &values);
        let buffer = gpu.scoped(&format!("uploading constant '{key}'"), || {
            Ok(gpu
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(key),
                    contents: &contents,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                }))
        })?;
        self.bytes += contents.len();
        self.buffers.push(buffer);
        self.by_key.insert(entry, self.buffers.len() - 1);
        Ok(self.buffers.len() - 1)
    }
}

/// f32 values as the kernels' storage holds them, padded to whole 4-byte words (copies and
/// bindings are counted in words; a binding is never empty).
pub(crate) fn encode(storage: Storage, values: &[f32]) -> Vec<u8> {
    let mut bytes: Vec<u8> = match storage {
        Storage::F32 => bytemuck::cast_slice(values).to_vec(),
        Storage::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
    };
    bytes.resize(bytes.len().next_multiple_of(4).max(4), 0);
    bytes
}

/// The f32 values of `n` elements in the kernels' storage.
pub(crate) fn decode(storage: Storage, bytes: &[u8], n: usize) -> Vec<f32> {
    match storage {
        Storage::F32 => bytemuck::pod_collect_to_vec(&bytes[..4 * n]),
        Storage::F16 => bytes[..2 * n]
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}

/// Lowering state for one specialised graph.
pub(crate) struct Lowering<'a> {
    pub graph: &'a Graph,
    gpu: &'a Gpu,
    consts: &'a mut Consts,
    /// Bytes of each logical buffer.
    pub values: Vec<usize>,
    /// Elements and storage of each logical buffer.
    elems: Vec<usize>,
    pub value_storage: Vec<Storage>,
    names: HashMap<String, usize>,
    /// A value converted to the other storage, once for all the nodes that read it there.
    converted: HashMap<(usize, Storage), usize>,
    pub dispatches: Vec<Dispatch>,
    /// The storage of each node (see `precision.rs`).
    node_storage: &'a [Storage],
    node: usize,
    storage: Storage,
}

impl<'a> Lowering<'a> {
    pub fn new(
        graph: &'a Graph,
        gpu: &'a Gpu,
        consts: &'a mut Consts,
        node_storage: &'a [Storage],
    ) -> Result<Lowering<'a>> {
        let mut l = Lowering {
            graph,
            gpu,
            consts,
            values: Vec::new(),
            elems: Vec::new(),
            value_storage: Vec::new(),
            names: HashMap::new(),
            converted: HashMap::new(),
            dispatches: Vec::new(),
            node_storage,
            node: 0,
            storage: Storage::F32,
        };
        for vi in &graph.inputs {
            if vi.dtype != DType::F32 {
                return Err(Error::Other(format!(
                    "the wgpu backend runs f32 tensors; input '{}' is {}",
                    vi.name, vi.dtype
                )));
            }
            // An input is uploaded in the storage of the first node that reads it.
            l.storage = graph
                .nodes
                .iter()
                .position(|n| n.inputs.contains(&vi.name))
                .map_or(Storage::F32, |i| node_storage[i]);
            l.new_value(&vi.name)?;
        }
        Ok(l)
    }

    /// Bytes of a buffer of `n` elements in the current node's storage, in whole words.
    fn bytes_of(&self, n: usize) -> usize {
        (n.max(1) * self.storage.bytes()).next_multiple_of(4)
    }

    /// The logical buffer holding a value, if it is not a constant.
    pub fn value_id(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    pub fn lower(&mut self, index: usize, node: &Node) -> Result<()> {
        self.node = index;
        self.storage = self.node_storage[index];
        lower_node(self, node)
    }

    fn new_value(&mut self, name: &str) -> Result<usize> {
        let shape = self.shape(name)?;
        let n: usize = shape.iter().product();
        if n == 0 {
            return Err(Error::Other(format!(
                "value '{name}' is empty ({shape:?}); the wgpu backend does not run empty tensors"
            )));
        }
        self.fits_a_binding(name, self.bytes_of(n))?;
        let v = self.push_value(n);
        self.names.insert(name.to_string(), v);
        Ok(v)
    }

    /// A logical buffer of `n` elements in the current storage.
    fn push_value(&mut self, n: usize) -> usize {
        self.values.push(self.bytes_of(n));
        self.elems.push(n);
        self.value_storage.push(self.storage);
        self.values.len() - 1
    }

    /// Value `v` in the current node's storage: itself, or its conversion (dispatched the
    /// first time a node in the other storage reads it).
    fn in_current_storage(&mut self, node: &Node, v: usize) -> Result<usize> {
        let to = self.storage;
        if self.value_storage[v] == to {
            return Ok(v);
        }
        if let Some(&c) = self.converted.get(&(v, to)) {
            return Ok(c);
        }
        // f32 nodes precede f16 ones (`precision.rs`), so values only ever narrow.
        if to == Storage::F32 {
            return Err(Error::node(
                node,
                "an f32 node reads an f16 value: the precision plan must keep f32 leading",
            ));
        }
        let n = self.elems[v];
        let c = self.push_value(n);
        let bindings = vec![(1, Operand::Value(v)), (2, Operand::Value(c))];
        let params = vec![Self::u32_of(node, n)?];
        self.dispatch_flat(node, TO_HALF, params, bindings, n)?;
        self.converted.insert((v, to), c);
        Ok(c)
    }

    /// A buffer the kernels bind must fit the adapter's storage binding limit; checked here
    /// so that nothing is allocated for a graph that cannot run, and the error says what to
    /// change.
    fn fits_a_binding(&self, what: &str, bytes: usize) -> Result<()> {
        let max = self.gpu.limits.max_storage_buffer_binding_size as usize;
        if bytes > max {
            return Err(Error::Other(format!(
                "'{what}' needs {:.1} MiB, more than this adapter binds at once ({} MiB): \
                 run a smaller batch or input",
                bytes as f64 / (1 << 20) as f64,
                max >> 20
            )));
        }
        Ok(())
    }

    /// A value's concrete shape (the graph is specialised, so every value has one).
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let vi = self
            .graph
            .value_type(name)
            .ok_or_else(|| Error::Other(format!("value '{name}' has no inferred type")))?;
        vi.shape
            .as_ref()
            .and_then(|s| s.iter().map(|d| d.known()).collect::<Option<Vec<usize>>>())
            .ok_or_else(|| Error::Other(format!("value '{name}' has no concrete shape")))
    }

    /// A node input as an operand: constants are uploaded on first use.
    pub fn input(&mut self, node: &Node, i: usize) -> Result<Operand> {
        let name = node
            .inputs
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::node(node, format!("input {i} is missing")))?;
        if let Some(t) = self.graph.constant(name) {
            let id = self.upload(node, name, || Ok(t.clone()))?;
            return Ok(Operand::Const(id));
        }
        let v = *self
            .names
            .get(name)
            .ok_or_else(|| Error::node(node, format!("input '{name}' is not computed before")))?;
        Ok(Operand::Value(self.in_current_storage(node, v)?))
    }

    pub fn input_shape(&self, node: &Node, i: usize) -> Result<Vec<usize>> {
        let name = node
            .inputs
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::node(node, format!("input {i} is missing")))?;
        self.shape(name)
    }

    pub fn has_input(node: &Node, i: usize) -> bool {
        node.inputs.get(i).is_some_and(|n| !n.is_empty())
    }

    /// A constant input's values, or an error saying the input must be constant.
    pub fn const_input(&self, node: &Node, i: usize, what: &str) -> Result<&'a Tensor> {
        node.inputs
            .get(i)
            .and_then(|n| self.graph.constant(n))
            .ok_or_else(|| {
                Error::node(
                    node,
                    format!("the wgpu backend needs {what} (input {i}) to be a constant"),
                )
            })
    }

    /// Uploads derived data under a key of its own.
    pub fn upload(
        &mut self,
        node: &Node,
        key: &str,
        data: impl FnOnce() -> Result<Tensor>,
    ) -> Result<usize> {
        self.consts.get_or_upload(self.gpu, key, self.storage, || {
            let t = data()?;
            t.to_f32_vec()
                .map_err(|e| Error::node(node, format!("constant '{key}': {e}")))
        })
    }

    pub fn upload_f32(&mut self, key: &str, data: Vec<f32>) -> Result<usize> {
        self.consts
            .get_or_upload(self.gpu, key, self.storage, || Ok(data))
    }

    /// A constant graph output, uploaded in f32 (it is only copied to the readback).
    pub fn upload_output(&mut self, key: &str, data: Vec<f32>) -> Result<usize> {
        self.consts
            .get_or_upload(self.gpu, key, Storage::F32, || Ok(data))
    }

    /// The logical buffer of node output `i`, which must be f32.
    pub fn output(&mut self, node: &Node, i: usize) -> Result<usize> {
        let name = node
            .outputs
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| Error::node(node, format!("output {i} is missing")))?;
        let vi = self.graph.value_type(name);
        if let Some(vi) = vi.filter(|v| v.dtype != DType::F32) {
            return Err(Error::node(
                node,
                format!(
                    "the wgpu backend runs f32 tensors; output '{name}' is {}",
                    vi.dtype
                ),
            ));
        }
        self.new_value(name)
            .map_err(|e| Error::node(node, e.to_string()))
    }

    /// A buffer of `elems` f32 values for this node only.
    pub fn temp(&mut self, node: &Node, elems: usize) -> Result<usize> {
        self.fits_a_binding(
            &format!("a temporary of node '{}'", node.name),
            self.bytes_of(elems),
        )?;
        Ok(self.push_value(elems))
    }

    /// Output `name` shares input `from`'s buffer (a reshape of it).
    pub fn alias(&mut self, node: &Node) -> Result<()> {
        let from = node
            .inputs
            .first()
            .ok_or_else(|| Error::node(node, "no input"))?;
        let to = node
            .outputs
            .first()
            .ok_or_else(|| Error::node(node, "no output"))?;
        // The alias keeps its input's storage: a reader in the other one converts it.
        match self.names.get(from) {
            Some(&v) => {
                self.names.insert(to.clone(), v);
                Ok(())
            }
            // Specialisation folds reshapes of constants.
            None if self.graph.constant(from).is_some() => Err(Error::node(
                node,
                format!("'{from}' is a constant: this reshape should have been folded"),
            )),
            None => Err(Error::node(
                node,
                format!("input '{from}' is not computed before"),
            )),
        }
    }

    pub fn dispatch(
        &mut self,
        kernel: Kernel,
        params: Vec<u32>,
        bindings: Vec<(u32, Operand)>,
        groups: [u32; 3],
    ) {
        self.dispatches.push(Dispatch {
            node: self.node,
            kernel,
            storage: self.storage,
            params,
            bindings,
            groups,
        });
    }

    /// A dispatch of one invocation per element of `n`, 256 per workgroup, the grid wrapped
    /// into y past the per-dimension limit.
    pub fn dispatch_flat(
        &mut self,
        node: &Node,
        kernel: Kernel,
        params: Vec<u32>,
        bindings: Vec<(u32, Operand)>,
        n: usize,
    ) -> Result<()> {
        let groups = flat_groups(n, self.gpu.limits.max_compute_workgroups_per_dimension)
            .ok_or_else(|| {
                Error::node(node, format!("{n} values are too many for one dispatch"))
            })?;
        self.dispatch(kernel, params, bindings, groups);
        Ok(())
    }

    /// The most workgroups one dispatch dimension takes.
    pub fn gpu_limits_per_dimension(&self) -> usize {
        self.gpu.limits.max_compute_workgroups_per_dimension as usize
    }

    /// A u32 parameter, or an error when the value does not fit.
    pub fn u32_of(node: &Node, v: usize) -> Result<u32> {
        u32::try_from(v).map_err(|_| {
            Error::node(
                node,
                format!("{v} does not fit the kernels' 32-bit indices"),
            )
        })
    }
}

/// Workgroups of 256 for `n` invocations: x up to `max`, then rows of y.
fn flat_groups(n: usize, max: u32) -> Option<[u32; 3]> {
    let groups = n.div_ceil(256).max(1);
    let max = max.max(1) as usize;
    let (x, y) = if groups <= max {
        (groups, 1)
    } else {
        (max, groups.div_ceil(max))
    };
    (y <= max).then_some([x as u32, y as u32, 1])
}

/// A 2-D window's geometry as the conv and pool kernels read it: KH, KW, SH, SW, PT, PL,
/// DH, DW.
pub(crate) fn window_params(node: &Node, rw: &ResolvedWindow) -> Result<[u32; 8]> {
    let u = |v: usize| Lowering::u32_of(node, v);
    Ok([
        u(rw.kernel[0])?,
        u(rw.kernel[1])?,
        u(rw.strides[0])?,
        u(rw.strides[1])?,
        u(rw.pads_begin[0])?,
        u(rw.pads_begin[1])?,
        u(rw.dilations[0])?,
        u(rw.dilations[1])?,
    ])
}

/// (code, lo, hi) of a fused activation, as the kernels' `activate` reads them.
pub(crate) fn activation_params(a: Option<Activation>) -> [u32; 3] {
    let (code, lo, hi) = match a {
        None => (0, 0.0, 0.0),
        Some(Activation::Relu) => (1, 0.0, 0.0),
        Some(Activation::Clip { min, max }) => (2, min, max),
        Some(Activation::Sigmoid) => (3, 0.0, 0.0),
    };
    [code, f32::to_bits(lo), f32::to_bits(hi)]
}

/// Whether the wgpu backend has kernels for this operator (the rest of the node's checks
/// happen when it is lowered on concrete shapes).
pub(crate) fn supports(op: &Op) -> bool {
    use accel_core::ir::{BinaryOp, UnaryOp};
    match op {
        Op::Conv(_)
        | Op::ConvTranspose(_)
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::GlobalAveragePool
        | Op::GlobalMaxPool
        | Op::BatchNormalization { .. }
        | Op::MatMul { .. }
        | Op::Gemm(_)
        | Op::Lstm(_)
        | Op::Clip
        | Op::LeakyRelu { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::Concat { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Flatten { .. }
        | Op::Slice
        | Op::Identity => true,
        Op::Unary(u) => !matches!(u, UnaryOp::Erf | UnaryOp::Not),
        Op::Binary(b) => matches!(
            b,
            BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Pow
                | BinaryOp::Max
                | BinaryOp::Min
        ),
        _ => false,
    }
}

fn lower_node(l: &mut Lowering, node: &Node) -> Result<()> {
    match &node.op {
        Op::Conv(c) => conv::conv(l, node, c),
        Op::ConvTranspose(c) => conv::conv_transpose(l, node, c),
        Op::MaxPool(p) => pool::pool(l, node, Some(p), false),
        Op::AveragePool(p) => pool::pool(l, node, Some(p), true),
        Op::GlobalMaxPool => pool::pool(l, node, None, false),
        Op::GlobalAveragePool => pool::pool(l, node, None, true),
        Op::BatchNormalization { epsilon } => elementwise::batch_norm(l, node, *epsilon),
        Op::MatMul { activation } => matmul::matmul(l, node, *activation),
        Op::Gemm(g) => matmul::gemm(l, node, g),
        Op::Lstm(a) => lstm::lstm(l, node, a),
        Op::Unary(u) if supports(&node.op) => elementwise::unary(l, node, *u),
        Op::Clip => elementwise::clip(l, node),
        Op::LeakyRelu { alpha } => elementwise::leaky_relu(l, node, *alpha),
        Op::Binary(b) if supports(&node.op) => elementwise::binary(l, node, *b),
        Op::Softmax { axis, legacy } => softmax::softmax(l, node, *axis, *legacy, false),
        Op::LogSoftmax { axis, legacy } => softmax::softmax(l, node, *axis, *legacy, true),
        Op::Concat { axis } => layout::concat(l, node, *axis),
        Op::Transpose { perm } => layout::transpose(l, node, perm.as_deref()),
        Op::Slice => layout::slice(l, node),
        Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Flatten { .. } | Op::Identity => {
            l.alias(node)
        }
        op => Err(Error::node(
            node,
            format!("the wgpu backend has no kernel for {}", op.name()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::flat_groups;

    #[test]
    fn flat_grids_cover_every_invocation_within_the_limits() {
        for (n, max) in [
            (1, 65535),
            (256, 65535),
            (257, 65535),
            (10_000_000, 65535),
            (5000, 7),
        ] {
            let [x, y, z] = flat_groups(n, max).expect("fits");
            assert!(x <= max && y <= max && z == 1);
            assert!((x as usize) * (y as usize) * 256 >= n, "{n} on {max}");
        }
        assert!(flat_groups(1 << 40, 16).is_none());
    }
}
