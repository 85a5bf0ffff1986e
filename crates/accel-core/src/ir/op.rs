//! The closed set of operators accel's IR knows, with typed attributes.
//!
//! Attributes that ONNX moved from attributes to inputs across opsets (Squeeze/Unsqueeze axes,
//! Slice starts/ends, Pad pads, Clip min/max, Reduce axes, Split sizes, Resize scales) are
//! normalised by the importer to the newest form: they are inputs here, usually constants.

use crate::{DType, Tensor};

/// An activation fused into the epilogue of a Conv, ConvTranspose, Gemm or MatMul.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    /// Clip(min, max); ReLU6 is Clip(0, 6).
    Clip {
        min: f32,
        max: f32,
    },
    Sigmoid,
}

impl Activation {
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Clip { min, max } => {
                if x.is_nan() {
                    x
                } else {
                    x.max(min).min(max)
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AutoPad {
    #[default]
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Spatial geometry shared by Conv, ConvTranspose and the pools. Vectors have one entry per
/// spatial axis; `pads` holds all begins then all ends, as in ONNX.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Window {
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
    pub auto_pad: AutoPad,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    pub window: Window,
    pub group: usize,
    pub activation: Option<Activation>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConvTranspose {
    pub window: Window,
    pub group: usize,
    pub output_padding: Vec<usize>,
    pub output_shape: Option<Vec<usize>>,
    pub activation: Option<Activation>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub window: Window,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
    pub activation: Option<Activation>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

impl Direction {
    pub fn num_directions(self) -> usize {
        if self == Direction::Bidirectional {
            2
        } else {
            1
        }
    }
}

/// ONNX LSTM with the default activations (sigmoid, tanh, tanh); gate order i, o, f, c.
#[derive(Clone, Debug, PartialEq)]
pub struct Lstm {
    pub hidden_size: usize,
    pub direction: Direction,
    pub clip: Option<f32>,
    pub input_forget: bool,
    /// 0: [seq, batch, feature]; 1: [batch, seq, feature].
    pub layout: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Neg,
    Abs,
    Sqrt,
    Reciprocal,
    Floor,
    Ceil,
    Erf,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Equal,
    Less,
    Greater,
    And,
    Or,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Linear,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordTransform {
    HalfPixel,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Resize {
    pub mode: ResizeMode,
    pub coord: CoordTransform,
    pub nearest_mode: NearestMode,
    pub extrapolation_value: f32,
}

/// Every operator of accel's IR. Inputs are positional as in ONNX; an absent optional input
/// is an empty name.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // convolution and pooling
    Conv(Conv),
    ConvTranspose(ConvTranspose),
    MaxPool(Pool),
    AveragePool(Pool),
    GlobalAveragePool,
    GlobalMaxPool,
    BatchNormalization {
        epsilon: f32,
    },
    // dense and recurrent
    MatMul {
        activation: Option<Activation>,
    },
    Gemm(Gemm),
    Lstm(Lstm),
    // activations and elementwise
    Unary(UnaryOp),
    /// min and max are optional inputs 1 and 2.
    Clip,
    LeakyRelu {
        alpha: f32,
    },
    Binary(BinaryOp),
    Where,
    Softmax {
        axis: i64,
        legacy: bool,
    },
    LogSoftmax {
        axis: i64,
        legacy: bool,
    },
    // reductions
    Reduce {
        op: ReduceOp,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    // layout and shape
    Concat {
        axis: i64,
    },
    Split {
        axis: i64,
        num_outputs: usize,
    },
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Squeeze,
    Unsqueeze,
    Flatten {
        axis: i64,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Gather {
        axis: i64,
    },
    Slice,
    Expand,
    Tile,
    Pad {
        mode: PadMode,
    },
    Resize(Resize),
    Range,
    ConstantOfShape {
        value: Tensor,
    },
    Cast {
        to: DType,
    },
    Identity,
    /// Inference no-op; output 1 (mask), when present, is all true.
    Dropout,
}

impl Op {
    /// The ONNX operator name (fused variants keep their base name).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::ConvTranspose(_) => "ConvTranspose",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool(_) => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::BatchNormalization { .. } => "BatchNormalization",
            Op::MatMul { .. } => "MatMul",
            Op::Gemm(_) => "Gemm",
            Op::Lstm(_) => "LSTM",
            Op::Unary(u) => match u {
                UnaryOp::Relu => "Relu",
                UnaryOp::Sigmoid => "Sigmoid",
                UnaryOp::Tanh => "Tanh",
                UnaryOp::Exp => "Exp",
                UnaryOp::Log => "Log",
                UnaryOp::Neg => "Neg",
                UnaryOp::Abs => "Abs",
                UnaryOp::Sqrt => "Sqrt",
                UnaryOp::Reciprocal => "Reciprocal",
                UnaryOp::Floor => "Floor",
                UnaryOp::Ceil => "Ceil",
                UnaryOp::Erf => "Erf",
                UnaryOp::Not => "Not",
            },
            Op::Clip => "Clip",
            Op::LeakyRelu { .. } => "LeakyRelu",
            Op::Binary(b) => match b {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
                BinaryOp::Pow => "Pow",
                BinaryOp::Max => "Max",
                BinaryOp::Min => "Min",
                BinaryOp::Equal => "Equal",
                BinaryOp::Less => "Less",
                BinaryOp::Greater => "Greater",
                BinaryOp::And => "And",
                BinaryOp::Or => "Or",
            },
            Op::Where => "Where",
            Op::Softmax { .. } => "Softmax",
            Op::LogSoftmax { .. } => "LogSoftmax",
            Op::Reduce { op, .. } => match op {
                ReduceOp::Sum => "ReduceSum",
                ReduceOp::Mean => "ReduceMean",
                ReduceOp::Max => "ReduceMax",
                ReduceOp::Min => "ReduceMin",
                ReduceOp::Prod => "ReduceProd",
            },
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Squeeze => "Squeeze",
            Op::Unsqueeze => "Unsqueeze",
            Op::Flatten { .. } => "Flatten",
            Op::Shape { .. } => "Shape",
            Op::Gather { .. } => "Gather",
            Op::Slice => "Slice",
            Op::Expand => "Expand",
            Op::Tile => "Tile",
            Op::Pad { .. } => "Pad",
            Op::Resize(_) => "Resize",
            Op::Range => "Range",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::Cast { .. } => "Cast",
            Op::Identity => "Identity",
            Op::Dropout => "Dropout",
        }
    }

    /// The activation fused into this node's epilogue, if any.
    pub fn fused_activation(&self) -> Option<Activation> {
        match self {
            Op::Conv(c) => c.activation,
            Op::ConvTranspose(c) => c.activation,
            Op::Gemm(g) => g.activation,
            Op::MatMul { activation } => *activation,
            _ => None,
        }
    }
}
