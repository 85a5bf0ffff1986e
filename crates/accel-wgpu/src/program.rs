//! A graph compiled for one set of input shapes: the lowered dispatches with their pipelines
//! and bind groups, device buffers planned from the values' lifetimes, an upload buffer for
//! the inputs and a readback buffer for the outputs. A run records one command buffer and
//! reads back once; it creates no buffers.

use crate::device::Gpu;
use crate::ops::{Consts, Lowering, Operand};
use accel_core::{Error, Graph, Result, Tensor, TensorView};
use std::sync::mpsc;
use wgpu::util::DeviceExt;

struct Step {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

/// Where a graph output comes from and where it lands in the readback buffer.
struct Output {
    source: Source,
    bytes: u64,
    offset: u64,
    shape: Vec<usize>,
}

enum Source {
    Buffer(usize),
    Const(usize),
}

pub(crate) struct Program {
    steps: Vec<Step>,
    buffers: Vec<wgpu::Buffer>,
    /// Per graph input: its device buffer (None when no kernel reads it) and its offset in
    /// the upload buffer.
    inputs: Vec<(Option<usize>, u64)>,
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
    pub fn build(gpu: &Gpu, graph: &Graph, consts: &mut Consts) -> Result<Program> {
        let mut l = Lowering::new(graph, gpu, consts)?;
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
                    Operand::Value(v)
                }
                None => {
                    let t = graph.constant(&vi.name).ok_or_else(|| {
                        Error::Other(format!("graph output '{}' is never computed", vi.name))
                    })?;
                    let key = format!("output#{}", vi.name);
                    Operand::Const(l.upload_f32(&key, t.to_f32_vec()?)?)
                }
            };
            output_sources.push((source, l.shape(&vi.name)?));
        }
        let (assigned, sizes) = plan(&l.values, &lifetimes);
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let dispatches = std::mem::take(&mut l.dispatches);
        let input_ids: Vec<Option<usize>> =
            graph.inputs.iter().map(|vi| l.value_id(&vi.name)).collect();
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
                let pipeline = gpu.kernels.pipeline(gpu, d.kernel)?;
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
                    pipeline,
                    bind_group,
                    groups: d.groups,
                });
            }
            let mut upload_bytes = 0u64;
            let inputs: Vec<(Option<usize>, u64)> = input_ids
                .iter()
                .zip(&graph.inputs)
                .map(|(id, vi)| {
                    let at = upload_bytes;
                    let used = id.and_then(|v| assigned[v]);
                    if used.is_some() {
                        let n: usize = vi
                            .shape
                            .iter()
                            .flatten()
                            .map(|d| d.known().unwrap_or(0))
                            .product();
                        upload_bytes += (n * 4) as u64;
                    }
                    (used, at)
                })
                .collect();
            let mut readback_bytes = 0u64;
            let outputs = output_sources
                .into_iter()
                .map(|(op, shape)| {
                    let bytes = (shape.iter().product::<usize>() * 4) as u64;
                    let offset = readback_bytes;
                    readback_bytes += bytes;
                    let source = match op {
                        Operand::Const(c) => Source::Const(c),
                        Operand::Value(v) => Source::Buffer(assigned[v].expect("outputs are live")),
                    };
                    Output {
                        source,
                        bytes,
                        offset,
                        shape,
                    }
                })
                .collect();
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
            Ok(Program {
                steps,
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
            for (t, &(buffer, at)) in inputs.iter().zip(&self.inputs) {
                if buffer.is_none() {
                    continue;
                }
                let data = t.as_slice::<f32>()?;
                let bytes: &[u8] = bytemuck::cast_slice(data);
                view.slice(at as usize..at as usize + bytes.len())
                    .copy_from_slice(bytes);
            }
        }
        self.upload.unmap();
        self.upload_mapped = false;
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("accel run"),
            });
        for (t, &(buffer, at)) in inputs.iter().zip(&self.inputs) {
            if let Some(b) = buffer {
                let bytes = (t.shape().iter().product::<usize>() * 4) as u64;
                encoder.copy_buffer_to_buffer(&self.upload, at, &self.buffers[b], 0, bytes);
            }
        }
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("accel graph"),
                timestamp_writes: None,
            });
            for s in &self.steps {
                pass.set_pipeline(&s.pipeline);
                pass.set_bind_group(0, &s.bind_group, &[]);
                pass.dispatch_workgroups(s.groups[0], s.groups[1], s.groups[2]);
            }
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
        let outputs = {
            let view = self
                .readback
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Other(format!("wgpu: cannot read the outputs: {e}")))?;
            self.outputs
                .iter()
                .map(|o| {
                    let bytes = &view[o.offset as usize..(o.offset + o.bytes) as usize];
                    let values: Vec<f32> = bytemuck::pod_collect_to_vec(bytes);
                    Tensor::from_vec(o.shape.clone(), values)
                })
                .collect::<Result<Vec<_>>>()
        };
        self.readback.unmap();
        gpu.check()?;
        outputs
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
