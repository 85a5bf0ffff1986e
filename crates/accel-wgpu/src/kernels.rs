//! The WGSL kernels (`kernels/` at the workspace root, one file per operator family, each
//! prefixed with `common.wgsl`) and the pipelines built from them, once per device.

use crate::device::Gpu;
use accel_core::Result;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

const COMMON: &str = include_str!("../../../kernels/common.wgsl");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    Elementwise,
    Layout,
    Conv,
    ConvTranspose,
    Pool,
    Softmax,
    Matmul,
    Lstm,
    /// f32 -> f16 at the precision boundary of a mixed program.
    Convert,
}

const TILE: &str = include_str!("../../../kernels/tile.wgsl");

impl Family {
    /// The family's WGSL after common.wgsl: the implicit-GEMM families share tile.wgsl.
    fn source(self) -> String {
        match self {
            Family::Elementwise => include_str!("../../../kernels/elementwise.wgsl").into(),
            Family::Layout => include_str!("../../../kernels/layout.wgsl").into(),
            Family::Conv => format!("{TILE}\n{}", include_str!("../../../kernels/conv.wgsl")),
            Family::ConvTranspose => format!(
                "{TILE}\n{}",
                include_str!("../../../kernels/conv_transpose.wgsl")
            ),
            Family::Pool => include_str!("../../../kernels/pool.wgsl").into(),
            Family::Softmax => include_str!("../../../kernels/softmax.wgsl").into(),
            Family::Matmul => include_str!("../../../kernels/matmul.wgsl").into(),
            Family::Lstm => include_str!("../../../kernels/lstm.wgsl").into(),
            Family::Convert => include_str!("../../../kernels/convert.wgsl").into(),
        }
    }
}

/// A kernel: a family's entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Kernel {
    pub family: Family,
    pub entry: &'static str,
}

/// What the kernels' tensors hold: the `T` of the WGSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Storage {
    F32,
    /// f16 storage, f32 arithmetic inside the kernels (needs SHADER_F16).
    F16,
}

impl Storage {
    pub fn bytes(self) -> usize {
        match self {
            Storage::F32 => 4,
            Storage::F16 => 2,
        }
    }

    fn prelude(self) -> &'static str {
        match self {
            Storage::F32 => "alias T = f32;\n",
            Storage::F16 => "enable f16;\nalias T = f16;\n",
        }
    }
}

#[derive(Default)]
pub(crate) struct Kernels {
    modules: Mutex<HashMap<(Family, Storage), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(Kernel, Storage), wgpu::ComputePipeline>>,
    /// Pipelines were built that the on-disk cache does not hold yet.
    unsaved: AtomicBool,
}

impl Kernels {
    /// The pipeline of `kernel`, built on first use (a shader error is a typed error).
    pub fn pipeline(
        &self,
        gpu: &Gpu,
        kernel: Kernel,
        storage: Storage,
    ) -> Result<wgpu::ComputePipeline> {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pipelines.get(&(kernel, storage)) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(&(kernel.family, storage)) {
                Some(m) => m.clone(),
                None => {
                    let source =
                        format!("{}{COMMON}\n{}", storage.prelude(), kernel.family.source());
                    let m = gpu.scoped(&format!("the {:?} shaders", kernel.family), || {
                        Ok(gpu
                            .device
                            .create_shader_module(wgpu::ShaderModuleDescriptor {
                                label: Some(kernel.entry),
                                source: wgpu::ShaderSource::Wgsl(source.into()),
                            }))
                    })?;
                    modules.insert((kernel.family, storage), m.clone());
                    m
                }
            }
        };
        let pipeline = gpu.scoped(&format!("the pipeline of kernel {}", kernel.entry), || {
            Ok(gpu
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.entry),
                    layout: None,
                    module: &module,
                    entry_point: Some(kernel.entry),
                    compilation_options: Default::default(),
                    cache: gpu.pipeline_cache.as_ref().map(|c| &c.cache),
                }))
        })?;
        pipelines.insert((kernel, storage), pipeline.clone());
        self.unsaved.store(true, Ordering::Relaxed);
        Ok(pipeline)
    }

    /// Saves the pipeline cache if pipelines were built since the last save.
    pub fn save_cache(&self, gpu: &Gpu) {
        if self.unsaved.swap(false, Ordering::Relaxed)
            && let Some(c) = &gpu.pipeline_cache
        {
            c.save();
        }
    }
}
