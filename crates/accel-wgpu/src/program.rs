//! A graph compiled for one set of input shapes: the lowered dispatches with their pipelines
//! and bind groups, device buffers planned from the values' lifetimes, an upload buffer for
//! the inputs and a readback buffer for the outputs. A run records one command buffer and
//! reads back once; it creates no buffers.

use crate::device::Gpu;
use crate::kernels::Storage;
use crate::ops::{Consts, Lowering, Operand, decode, encode};
use crate::precision;
use accel_core::{Error, Graph, KernelProfile, NodeTime, Result, Tensor, TensorView};
use std::sync::mpsc;
use wgpu::util::DeviceExt;

struct Step {
    /// The node it belongs to.
    node: usize,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

/// Where a graph output comes from and where it lands in the readback buffer.
struct Output {
    source: Source,
    storage: Storage,
    bytes: u64,
    offset: u64,
    shape: Vec<usize>,
}

enum Source {
    Buffer(usize),
    Const(usize),
}

/// Timestamp queries: two per compute pass, resolved into `resolve` and copied behind the
/// outputs in the readback buffer.
struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    /// One pass per step (profiling) or one pass for the whole run.
    per_step: bool,
    count: u32,
    readback_offset: u64,
}

pub(crate) struct Program {
    steps: Vec<Step>,
    timestamps: Option<Timestamps>,
    /// (name, operator) of each node, for the profile.
    nodes: Vec<(String, String)>,
    /// Device times of the last run.
    pub last_profile: Option<KernelProfile>,
    buffers: Vec<wgpu::Buffer>,
    /// Per graph input: its device buffer (None when no kernel reads it), its offset in
    /// the upload buffer and its storage.
    inputs: Vec<(Option<usize>, u64, Storage)>,
    outputs: Vec<Output>,
    upload: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Whether `upload` is mapped for writing (it is, between runs).
    upload_mapped: bool,
    /// Bytes of the planned activation buffers.
    pub arena_bytes: usize,
}

/// Assigns logical buffers to device buffers: a logical buffer takes a free device buffer
/// (the smallest that fits, else the largest, grown) at its first use and frees it after its
/// last. Returns the assignment and each device buffer's size.
fn plan(sizes: &[usize], lifetimes: &[Option<(usize, usize)>]) -> (Vec<Option<usize>>, Vec<usize>) {
    let mut order: Vec<usize> = (0..sizes.len())
        .filter(|&v| lifetimes[v].is_some())
        .collect();
    order.sort_by_key(|&v| (lifetimes[v].map(|l| l.0), v));
    let mut assigned = vec![None; sizes.len()];
    let mut buffers: Vec<usize> = Vec::new();
    // Device buffers free at the current step, with the step after which they freed up.
    let mut busy: Vec<(usize, usize)> = Vec::new(); // (last use, device buffer)
    let mut free: Vec<usize> = Vec::new();
    for v in order {
        let (first, last) = lifetimes[v].expect("filtered");
        // Everything whose last use is before this first use is free again.
        busy.retain(|&(end, b)| {
            if end < first {
                free.push(b);
                false
            } else {
                true
            }
        });
        let fit = free
            .iter()
            .enumerate()
            .filter(|(_, b)| buffers[**b] >= sizes[v])
            .min_by_key(|(_, b)| buffers[**b])
            .or_else(|| free.iter().enumerate().max_by_key(|(_, b)| buffers[**b]))
            .map(|(i, _)| i);
        let b = match fit {
            Some(i) => free.swap_remove(i),
            None => {
                buffers.push(0);
                buffers.len() - 1
            }
        };
        buffers[b] = buffers[b].max(sizes[v]);
        assigned[v] = Some(b);
        busy.push((last, b));
    }
    (assigned, buffers)
}

/// Bytes of `n` elements in `storage`, in whole 4-byte words (what copies move).
fn words(n: usize, storage: Storage) -> u64 {
    (n * storage.bytes()).next_multiple_of(4) as u64
}

/// Extends a value's lifetime to step `s`.
fn touch(lifetimes: &mut [Option<(usize, usize)>], v: usize, s: usize) {
    let lt = lifetimes[v].get_or_insert((s, s));
    lt.0 = lt.0.min(s);
    lt.1 = lt.1.max(s);
}

/// Extends the lifetime of a value some kernel uses (an unused input needs no buffer).
fn touch_if_used(lifetimes: &mut [Option<(usize, usize)>], v: usize, s: usize) {
    if lifetimes[v].is_some() {
        touch(lifetimes, v, s);
    }
}

impl Program {
    /// Lowers and plans `graph` (specialised to concrete input shapes).
    /// With `profile`, each step runs in a compute pass of its own so that its device time
    /// is measured.
    pub fn build(
        gpu: &Gpu,
        graph: &Graph,
        consts: &mut Consts,
        storage: Storage,
        profile: bool,
    ) -> Result<Program> {
        let node_storage = precision::node_storages(graph, storage);
        let mut l = Lowering::new(graph, gpu, consts, &node_storage)?;
        for (i, node) in graph.nodes.iter().enumerate() {
            l.lower(i, node)?;
        }
        let steps = l.dispatches.len();
        // Lifetimes in dispatch indices; graph inputs are live from the start, outputs to
        // the end.
        let mut lifetimes: Vec<Option<(usize, usize)>> = vec![None; l.values.len()];
        for (s, d) in l.dispatches.iter().enumerate() {
            for (_, op) in &d.bindings {
                if let Operand::Value(v) = op {
                    touch(&mut lifetimes, *v, s);
                }
            }
        }
        for vi in &graph.inputs {
            if let Some(v) = l.value_id(&vi.name) {
                touch_if_used(&mut lifetimes, v, 0);
            }
        }
        let mut output_sources = Vec::new();
        for vi in &graph.outputs {
            let source = match l.value_id(&vi.name) {
                Some(v) => {
                    touch(&mut lifetimes, v, 0);
                    touch(&mut lifetimes, v, steps);
                    (Operand::Value(v), l.value_storage[v])
                }
                None => {
                    let t = graph.constant(&vi.name).ok_or_else(|| {
                        Error::Other(format!("graph output '{}' is never computed", vi.name))
                    })?;
                    let key = format!("output#{}", vi.name);
                    let c = l.upload_output(&key, t.to_f32_vec()?)?;
                    (Operand::Const(c), Storage::F32)
                }
            };
            output_sources.push((source, l.shape(&vi.name)?));
        }
        let (assigned, sizes) = plan(&l.values, &lifetimes);
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let dispatches = std::mem::take(&mut l.dispatches);
        let input_ids: Vec<Option<(usize, Storage)>> = graph
            .inputs
            .iter()
            .map(|vi| l.value_id(&vi.name).map(|v| (v, l.value_storage[v])))
            .collect();
        drop(l);
        gpu.scoped("planning the device buffers and bind groups", || {
            let buffers: Vec<wgpu::Buffer> = sizes
                .iter()
                .enumerate()
                .map(|(i, &bytes)| {
                    gpu.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(&format!("accel arena {i}")),
                        size: bytes.max(4) as u64,
                        usage,
                        mapped_at_creation: false,
                    })
                })
                .collect();
            let buffer_of = |op: &Operand| -> &wgpu::Buffer {
                match op {
                    Operand::Const(c) => &consts.buffers[*c],
                    Operand::Value(v) => &buffers[assigned[*v].expect("a used value has a buffer")],
                }
            };
            let mut steps = Vec::with_capacity(dispatches.len());
            for d in &dispatches {
                let pipeline = gpu.kernels.pipeline(gpu, d.kernel, d.storage)?;
                let params = gpu
                    .device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(d.kernel.entry),
                        contents: bytemuck::cast_slice(&d.params),
                        usage: wgpu::BufferUsages::STORAGE,
                    });
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                }];
                entries.extend(d.bindings.iter().map(|(binding, op)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: buffer_of(op).as_entire_binding(),
                }));
                let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&graph.nodes[d.node].name),
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                });
                steps.push(Step {
                    node: d.node,
                    pipeline,
                    bind_group,
                    groups: d.groups,
                });
            }
            let mut upload_bytes = 0u64;
            let inputs: Vec<(Option<usize>, u64, Storage)> = input_ids
                .iter()
                .zip(&graph.inputs)
                .map(|(id, vi)| {
                    let at = upload_bytes;
                    let used = id.and_then(|(v, _)| assigned[v]);
                    let storage = id.map_or(Storage::F32, |(_, s)| s);
                    if used.is_some() {
                        let n: usize = vi
                            .shape
                            .iter()
                            .flatten()
                            .map(|d| d.known().unwrap_or(0))
                            .product();
                        upload_bytes += words(n, storage);
                    }
                    (used, at, storage)
                })
                .collect();
            let mut readback_bytes = 0u64;
            let outputs = output_sources
                .into_iter()
                .map(|((op, storage), shape)| {
                    let bytes = words(shape.iter().product(), storage);
                    let offset = readback_bytes;
                    readback_bytes += bytes;
                    let source = match op {
                        Operand::Const(c) => Source::Const(c),
                        Operand::Value(v) => Source::Buffer(assigned[v].expect("outputs are live")),
                    };
                    Output {
                        source,
                        storage,
                        bytes,
                        offset,
                        shape,
                    }
                })
                .collect();
            // wgpu allows 4096 queries per set: past that only the whole run is timed.
            let per_step = profile && steps.len() * 2 <= 4096;
            let timestamps = gpu.timestamp_ns.map(|_| {
                let count = if per_step { 2 * steps.len() as u32 } else { 2 };
                let readback_offset = readback_bytes.next_multiple_of(8);
                readback_bytes = readback_offset + 8 * count as u64;
                Timestamps {
                    set: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("accel kernel times"),
                        ty: wgpu::QueryType::Timestamp,
                        count,
                    }),
                    resolve: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("accel kernel times"),
                        size: 8 * count as u64,
                        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    }),
                    per_step,
                    count,
                    readback_offset,
                }
            });
            let upload = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("accel inputs"),
                size: upload_bytes.max(4),
                usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            });
            let readback = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("accel outputs"),
                size: readback_bytes.max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            gpu.kernels.save_cache(gpu);
            Ok(Program {
                steps,
                timestamps,
                nodes: graph
                    .nodes
                    .iter()
                    .map(|n| (n.name.clone(), n.op.name().to_string()))
                    .collect(),
                last_profile: None,
                arena_bytes: sizes.iter().sum(),
                buffers,
                inputs,
                outputs,
                upload,
                readback,
                upload_mapped: true,
            })
        })
    }

    /// Uploads the inputs, runs every dispatch in one command buffer and reads the outputs
    /// back.
    pub fn run(
        &mut self,
        gpu: &Gpu,
        consts: &Consts,
        inputs: &[TensorView],
    ) -> Result<Vec<Tensor>> {
        if !self.upload_mapped {
            map(gpu, &self.upload, wgpu::MapMode::Write)?;
            self.upload_mapped = true;
        }
        {
            let mut view = self
                .upload
                .slice(..)
                .get_mapped_range_mut()
                .map_err(|e| Error::Other(format!("wgpu: cannot write the inputs: {e}")))?;
            for (t, &(buffer, at, storage)) in inputs.iter().zip(&self.inputs) {
                if buffer.is_none() {
                    continue;
                }
                let data = t.as_slice::<f32>()?;
                let at = at as usize;
                match storage {
                    Storage::F32 => {
                        let bytes: &[u8] = bytemuck::cast_slice(data);
                        view.slice(at..at + bytes.len()).copy_from_slice(bytes);
                    }
                    Storage::F16 => {
                        let bytes = encode(Storage::F16, data);
                        view.slice(at..at + bytes.len()).copy_from_slice(&bytes);
                    }
                }
            }
        }
        self.upload.unmap();
        self.upload_mapped = false;
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("accel run"),
            });
        for (t, &(buffer, at, storage)) in inputs.iter().zip(&self.inputs) {
            if let Some(b) = buffer {
                let bytes = words(t.shape().iter().product(), storage);
                encoder.copy_buffer_to_buffer(&self.upload, at, &self.buffers[b], 0, bytes);
            }
        }
        match &self.timestamps {
            Some(t) if t.per_step => {
                for (i, s) in self.steps.iter().enumerate() {
                    let writes = pass_writes(&t.set, 2 * i as u32);
                    record(&mut encoder, Some(writes), std::slice::from_ref(s));
                }
            }
            Some(t) => record(&mut encoder, Some(pass_writes(&t.set, 0)), &self.steps),
            None => record(&mut encoder, None, &self.steps),
        }
        if let Some(t) = &self.timestamps {
            encoder.resolve_query_set(&t.set, 0..t.count, &t.resolve, 0);
            encoder.copy_buffer_to_buffer(
                &t.resolve,
                0,
                &self.readback,
                t.readback_offset,
                8 * t.count as u64,
            );
        }
        for o in &self.outputs {
            let src = match o.source {
                Source::Buffer(b) => &self.buffers[b],
                Source::Const(c) => &consts.buffers[c],
            };
            encoder.copy_buffer_to_buffer(src, 0, &self.readback, o.offset, o.bytes);
        }
        gpu.queue.submit([encoder.finish()]);
        // The upload buffer is mapped again for the next run while this one finishes.
        let (upload_done, readback_done) = (
            map_async(&self.upload, wgpu::MapMode::Write),
            map_async(&self.readback, wgpu::MapMode::Read),
        );
        wait(gpu)?;
        received(upload_done)?;
        self.upload_mapped = true;
        received(readback_done)?;
        let (outputs, profile) = self.read_back(gpu)?;
        self.last_profile = profile;
        self.readback.unmap();
        gpu.check()?;
        outputs
    }
}

impl Program {
    /// The outputs and kernel times in the mapped readback buffer.
    fn read_back(&self, gpu: &Gpu) -> Result<(Result<Vec<Tensor>>, Option<KernelProfile>)> {
        let view = self
            .readback
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Other(format!("wgpu: cannot read the outputs: {e}")))?;
        let outputs = self
            .outputs
            .iter()
            .map(|o| {
                let bytes = &view[o.offset as usize..(o.offset + o.bytes) as usize];
                let n = o.shape.iter().product();
                Tensor::from_vec(o.shape.clone(), decode(o.storage, bytes, n))
            })
            .collect();
        let profile = self
            .timestamps
            .as_ref()
            .zip(gpu.timestamp_ns)
            .map(|(t, ns)| {
                let at = t.readback_offset as usize;
                let ticks: Vec<u64> =
                    bytemuck::pod_collect_to_vec(&view[at..at + 8 * t.count as usize]);
                self.profile(&ticks, t.per_step, ns)
            });
        Ok((outputs, profile))
    }

    /// The run's device times from its timestamp ticks (pairs of pass start and end).
    fn profile(&self, ticks: &[u64], per_step: bool, ns_per_tick: f64) -> KernelProfile {
        let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 * ns_per_tick / 1e6;
        let pairs: Vec<(u64, u64)> = ticks.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        let total_ms = match (pairs.first(), pairs.last()) {
            (Some(first), Some(last)) => ms(first.0, last.1),
            _ => 0.0,
        };
        let mut nodes: Vec<NodeTime> = Vec::new();
        if per_step {
            for (s, &(a, b)) in self.steps.iter().zip(&pairs) {
                let (name, op) = &self.nodes[s.node];
                match nodes.last_mut() {
                    Some(last) if last.node == *name => last.ms += ms(a, b),
                    _ => nodes.push(NodeTime {
                        node: name.clone(),
                        op: op.clone(),
                        ms: ms(a, b),
                    }),
                }
            }
        }
        KernelProfile { total_ms, nodes }
    }
}

/// Timestamps at the start and end of a compute pass, at queries `first` and `first + 1`.
fn pass_writes(set: &wgpu::QuerySet, first: u32) -> wgpu::ComputePassTimestampWrites<'_> {
    wgpu::ComputePassTimestampWrites {
        query_set: set,
        beginning_of_pass_write_index: Some(first),
        end_of_pass_write_index: Some(first + 1),
    }
}

/// One compute pass running `steps` in order.
fn record(
    encoder: &mut wgpu::CommandEncoder,
    timestamp_writes: Option<wgpu::ComputePassTimestampWrites>,
    steps: &[Step],
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("accel graph"),
        timestamp_writes,
    });
    for s in steps {
        pass.set_pipeline(&s.pipeline);
        pass.set_bind_group(0, &s.bind_group, &[]);
        pass.dispatch_workgroups(s.groups[0], s.groups[1], s.groups[2]);
    }
}

type MapResult = mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>;

fn map_async(buffer: &wgpu::Buffer, mode: wgpu::MapMode) -> MapResult {
    let (tx, rx) = mpsc::channel();
    buffer.map_async(mode, .., move |r| {
        let _ = tx.send(r);
    });
    rx
}

fn wait(gpu: &Gpu) -> Result<()> {
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Other(format!("wgpu: waiting for the device failed: {e}")))?;
    gpu.check()
}

fn received(rx: MapResult) -> Result<()> {
    match rx.try_recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Other(format!("wgpu: mapping a buffer failed: {e}"))),
        Err(_) => Err(Error::Other(
            "wgpu: a buffer mapping never completed".into(),
        )),
    }
}

fn map(gpu: &Gpu, buffer: &wgpu::Buffer, mode: wgpu::MapMode) -> Result<()> {
    let done = map_async(buffer, mode);
    wait(gpu)?;
    received(done)
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn buffers_are_shared_only_by_values_that_are_never_alive_together() {
        // A chain a -> b -> c -> d plus a long-lived skip value e.
        let sizes = [400, 800, 400, 1200, 100];
        let lifetimes = [
            Some((0, 1)),
            Some((1, 2)),
            Some((2, 3)),
            Some((3, 4)),
            Some((0, 4)),
        ];
        let (assigned, buffers) = plan(&sizes, &lifetimes);
        for i in 0..sizes.len() {
            for j in 0..i {
                let (a, b) = (lifetimes[i].unwrap(), lifetimes[j].unwrap());
                let overlap = a.0 <= b.1 && b.0 <= a.1;
                if overlap {
                    assert_ne!(
                        assigned[i], assigned[j],
                        "values {i} and {j} are alive together"
                    );
                }
            }
            assert!(buffers[assigned[i].unwrap()] >= sizes[i]);
        }
        assert!(
            buffers.len() < sizes.len(),
            "no buffer was reused: {buffers:?}"
        );
    }
}
