//! ONNX import: `ModelProto` bytes to accel's [`Graph`](crate::Graph).
//!
//! The protobuf types are generated from onnx.proto at build time (pure Rust, no `protoc`).
//! Format concerns stay here; the IR knows nothing of protobuf.

mod attrs;
mod export;
mod import;
mod ops;
mod tensor;

#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use export::{EXPORT_OPSET, export_model, graph_to_model};
pub use import::{MAX_OPSET, MIN_OPSET, load_model, parse_model};
pub use tensor::{tensor_from_proto, tensor_to_proto};
