//! Session: a model loaded, optimized and compiled for one backend.

use crate::registry::available_backend;
use accel_core::ir::{Graph, ValueInfo};
use accel_core::{CompileOptions, Executable, Result, Tensor, TensorView, passes};
use std::path::Path;

pub struct SessionBuilder {
    backend: String,
    options: CompileOptions,
}

impl SessionBuilder {
    /// Backend id ("cpu", "wgpu:0", "ort-openvino", ...). Defaults to "cpu".
    pub fn backend(mut self, id: &str) -> Self {
        self.backend = id.to_string();
        self
    }

    pub fn threads(mut self, threads: usize) -> Self {
        self.options.threads = Some(threads);
        self
    }

    pub fn options(mut self, options: CompileOptions) -> Self {
        self.options = options;
        self
    }

    /// Loads an ONNX file, optimizes it and compiles it for the backend.
    pub fn load(self, path: impl AsRef<Path>) -> Result<Session> {
        let mut graph = accel_core::onnx::load_model(path)?;
        passes::optimize(&mut graph)?;
        self.compile(graph)
    }

    /// Compiles an already optimized graph.
    pub fn compile(self, graph: Graph) -> Result<Session> {
        let backend = available_backend(&self.backend)?;
        let exe = backend.compile(&graph, &self.options)?;
        Ok(Session {
            backend: backend.id().to_string(),
            inputs: graph.inputs,
            outputs: graph.outputs,
            exe,
        })
    }
}

pub struct Session {
    backend: String,
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
    exe: Box<dyn Executable>,
}

impl Session {
    pub fn builder() -> SessionBuilder {
        SessionBuilder {
            backend: "cpu".into(),
            options: CompileOptions::default(),
        }
    }

    pub fn backend(&self) -> &str {
        &self.backend
    }

    pub fn inputs(&self) -> &[ValueInfo] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueInfo] {
        &self.outputs
    }

    /// Runs the model; inputs in the order of [`Session::inputs`].
    /// Memory the compiled graph holds (weights, activation arena, scratch), where the
    /// backend reports it.
    pub fn memory(&self) -> accel_core::MemoryStats {
        self.exe.memory()
    }

    pub fn run(&self, inputs: &[TensorView]) -> Result<Vec<Tensor>> {
        self.exe.run(inputs)
    }

    /// Device times of the last run (GPU backends with timestamp queries), per node when
    /// compiled with `CompileOptions::profile`.
    pub fn last_kernel_profile(&self) -> Option<accel_core::KernelProfile> {
        self.exe.last_kernel_profile()
    }
}
