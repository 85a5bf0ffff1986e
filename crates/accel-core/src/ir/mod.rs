//! accel's graph IR: operators with typed attributes, values with symbolic shapes.

mod graph;
mod op;

pub use graph::{Dim, Graph, ModelSource, Node, ValueInfo};
pub use op::*;
