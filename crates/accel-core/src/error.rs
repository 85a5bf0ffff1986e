//! One error type for the whole runtime. Every message says what went wrong and, where it can,
//! what to do about it.

use crate::DType;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },

    #[error("not a valid ONNX model: {0}")]
    InvalidModel(String),

    #[error("unsupported operator {op_type} (domain '{domain}', opset {opset}) at node '{node}'")]
    UnsupportedOp {
        op_type: String,
        domain: String,
        opset: i64,
        node: String,
    },

    #[error("node '{node}' ({op_type}): {message}")]
    InvalidNode {
        node: String,
        op_type: String,
        message: String,
    },

    #[error(
        "unsupported data type {0} (accel handles float32, float16, int64, int32, uint8, bool)"
    )]
    UnsupportedDType(String),

    #[error("input '{name}': expected dtype {expected}, got {actual}")]
    DTypeMismatch {
        name: String,
        expected: DType,
        actual: DType,
    },

    #[error("input '{name}': expected shape {expected}, got {actual:?}")]
    ShapeMismatch {
        name: String,
        expected: String,
        actual: Vec<usize>,
    },

    #[error("expected {expected} input(s) ({names}), got {actual}")]
    InputCount {
        expected: usize,
        actual: usize,
        names: String,
    },

    #[error("shape error: {0}")]
    Shape(String),

    #[error("npy file {path}: {message}")]
    Npy { path: String, message: String },

    #[error("backend {backend} is unavailable: {reason}")]
    BackendUnavailable { backend: String, reason: String },

    /// An input image that cannot be used: unreadable, empty, not an image, truncated, too large.
    #[error("image {source_name}: {reason}")]
    Image { source_name: String, reason: String },

    /// A meter reading with another number of digits than the caller expects.
    #[error(
        "image {source_name}: expected {expected} digits, read {}: \"{reading}\"",
        .reading.chars().count()
    )]
    DigitCount {
        source_name: String,
        expected: usize,
        reading: String,
    },

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    pub fn node(node: &crate::Node, message: impl Into<String>) -> Self {
        Error::InvalidNode {
            node: node.name.clone(),
            op_type: node.op.name().to_string(),
            message: message.into(),
        }
    }
}

/// Shorthand for a shape error with a formatted message.
#[macro_export]
macro_rules! shape_err {
    ($($arg:tt)*) => { $crate::Error::Shape(format!($($arg)*)) };
}
