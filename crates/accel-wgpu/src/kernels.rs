//! The WGSL kernels (`kernels/` at the workspace root, one file per operator family, each
//! prefixed with `common.wgsl`) and the pipelines built from them, once per device.

use crate::device::Gpu;
use accel_core::Result;
use std::collections::HashMap;
use std::sync::Mutex;

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
}

impl Family {
    fn source(self) -> &'static str {
        match self {
            Family::Elementwise => include_str!("../../../kernels/elementwise.wgsl"),
            Family::Layout => include_str!("../../../kernels/layout.wgsl"),
            Family::Conv => include_str!("../../../kernels/conv.wgsl"),
            Family::ConvTranspose => include_str!("../../../kernels/conv_transpose.wgsl"),
            Family::Pool => include_str!("../../../kernels/pool.wgsl"),
            Family::Softmax => include_str!("../../../kernels/softmax.wgsl"),
            Family::Matmul => include_str!("../../../kernels/matmul.wgsl"),
            Family::Lstm => include_str!("../../../kernels/lstm.wgsl"),
        }
    }
}

/// A kernel: a family's entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Kernel {
    pub family: Family,
    pub entry: &'static str,
}

#[derive(Default)]
pub(crate) struct Kernels {
    modules: Mutex<HashMap<Family, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<Kernel, wgpu::ComputePipeline>>,
}

impl Kernels {
    /// The pipeline of `kernel`, built on first use (a shader error is a typed error).
    pub fn pipeline(&self, gpu: &Gpu, kernel: Kernel) -> Result<wgpu::ComputePipeline> {
        let mut pipelines = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pipelines.get(&kernel) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(&kernel.family) {
                Some(m) => m.clone(),
                None => {
                    let source = format!("{COMMON}\n{}", kernel.family.source());
                    let m = gpu.scoped(&format!("the {:?} shaders", kernel.family), || {
                        Ok(gpu
                            .device
                            .create_shader_module(wgpu::ShaderModuleDescriptor {
                                label: Some(kernel.entry),
                                source: wgpu::ShaderSource::Wgsl(source.into()),
                            }))
                    })?;
                    modules.insert(kernel.family, m.clone());
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
                    cache: None,
                }))
        })?;
        pipelines.insert(kernel, pipeline.clone());
        Ok(pipeline)
    }
}
