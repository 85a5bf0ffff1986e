//! accel-core: tensors, the graph IR, ONNX import, graph passes and the Backend trait.
//!
//! Data flows one way: `onnx::load_model` turns a file into a [`Graph`], `passes::optimize`
//! rewrites it, and a [`Backend`] compiles it into an [`Executable`] that runs many times.

mod backend;
pub mod cache;
mod dtype;
mod error;
pub mod ir;
pub mod npy;
pub mod onnx;
pub mod ops;
pub mod passes;
mod tensor;

pub use backend::{
    Backend, CompileOptions, DeviceInfo, Executable, KernelProfile, MemoryStats, NodeTime,
    Precision, Probe,
};
pub use dtype::DType;
pub use error::{Error, Result};
pub use half;
pub use ir::{Dim, Graph, Node, Op, ValueInfo};
pub use tensor::{
    Element, MAX_TENSOR_ELEMENTS, Tensor, TensorData, TensorDataRef, TensorView, checked_numel,
    numel,
};

/// Loads an ONNX file and runs the graph passes: what every backend compiles.
pub fn load_optimized(path: impl AsRef<std::path::Path>) -> Result<Graph> {
    let mut g = onnx::load_model(path)?;
    passes::optimize(&mut g)?;
    Ok(g)
}
