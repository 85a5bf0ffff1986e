//! The graph: values named as in ONNX, nodes in topological order, constants kept apart.

use super::op::Op;
use crate::{DType, Error, Result, Tensor};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// One dimension of a value's shape: known, or a symbol such as the batch size "N".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    Sym(String),
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// A value's element type and shape; `shape` is `None` when not even the rank is known.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Option<Vec<Dim>>,
}

impl ValueInfo {
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<Dim>) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            dtype,
            shape: Some(shape),
        }
    }

    /// The shape when every dimension is known.
    pub fn concrete_shape(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(Dim::known).collect()
    }

    pub fn shape_string(&self) -> String {
        match &self.shape {
            None => "[?]".into(),
            Some(s) => format!(
                "[{}]",
                s.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    /// Value names; "" marks an absent optional input.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl Node {
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    /// The default-domain opset the model was imported from.
    pub opset: i64,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub nodes: Vec<Node>,
    /// Initializers and folded values. Shared so cloning a graph does not copy weights.
    pub constants: HashMap<String, Arc<Tensor>>,
    /// Inferred types of intermediate values (filled by shape inference).
    pub value_info: HashMap<String, ValueInfo>,
    /// The file the graph was imported from, for backends that run the original model
    /// (ONNX Runtime). `None` for graphs built in code.
    pub source: Option<ModelSource>,
}

/// The original ONNX bytes of an imported model, and its path when it came from a file
/// (external data files are looked up next to it).
#[derive(Clone)]
pub struct ModelSource {
    pub path: Option<std::path::PathBuf>,
    pub bytes: Arc<Vec<u8>>,
}

impl fmt::Debug for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ModelSource({:?}, {} bytes)",
            self.path,
            self.bytes.len()
        )
    }
}

impl Graph {
    pub fn constant(&self, name: &str) -> Option<&Tensor> {
        self.constants.get(name).map(|t| t.as_ref())
    }

    pub fn is_constant(&self, name: &str) -> bool {
        self.constants.contains_key(name)
    }

    /// Type of any value: graph input, constant or inferred intermediate.
    pub fn value_type(&self, name: &str) -> Option<ValueInfo> {
        if let Some(t) = self.constants.get(name) {
            return Some(ValueInfo::new(
                name,
                t.dtype(),
                t.shape().iter().map(|&d| Dim::Known(d)).collect(),
            ));
        }
        self.inputs
            .iter()
            .find(|v| v.name == name)
            .or_else(|| self.value_info.get(name))
            .cloned()
    }

    /// How many times each value is read (by nodes or as a graph output).
    pub fn use_counts(&self) -> HashMap<&str, usize> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for n in &self.nodes {
            for i in n.inputs.iter().filter(|s| !s.is_empty()) {
                *counts.entry(i.as_str()).or_default() += 1;
            }
        }
        for o in &self.outputs {
            *counts.entry(o.name.as_str()).or_default() += 1;
        }
        counts
    }

    /// Index of the node producing each value.
    pub fn producers(&self) -> HashMap<&str, usize> {
        let mut p = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.outputs {
                p.insert(o.as_str(), i);
            }
        }
        p
    }

    pub fn is_graph_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|o| o.name == name)
    }

    /// Replaces every read of `from` by `to` (node inputs and graph outputs). When a graph
    /// output is renamed, the producer of `to` is renamed instead so the output keeps its name.
    pub fn replace_uses(&mut self, from: &str, to: &str) {
        if self.is_graph_output(from) {
            // Keep the public name: make `to`'s producer write `from` directly.
            if let Some(pi) = self
                .nodes
                .iter()
                .position(|n| n.outputs.iter().any(|o| o == to))
            {
                for o in self.nodes[pi].outputs.iter_mut() {
                    if o == to {
                        *o = from.to_string();
                    }
                }
                for n in self.nodes.iter_mut() {
                    for i in n.inputs.iter_mut() {
                        if i == to {
                            *i = from.to_string();
                        }
                    }
                }
                if let Some(vi) = self.value_info.remove(to) {
                    self.value_info.insert(
                        from.to_string(),
                        ValueInfo {
                            name: from.to_string(),
                            ..vi
                        },
                    );
                }
                return;
            }
        }
        for n in self.nodes.iter_mut() {
            for i in n.inputs.iter_mut() {
                if i == from {
                    *i = to.to_string();
                }
            }
        }
    }

    /// Checks that nodes are in topological order and every read value exists.
    pub fn validate(&self) -> Result<()> {
        let mut defined: HashSet<&str> = self.inputs.iter().map(|v| v.name.as_str()).collect();
        defined.extend(self.constants.keys().map(String::as_str));
        for n in &self.nodes {
            for i in n.inputs.iter().filter(|s| !s.is_empty()) {
                if !defined.contains(i.as_str()) {
                    return Err(Error::InvalidModel(format!(
                        "node '{}' ({}) reads '{}', which no earlier node, input or initializer defines",
                        n.name,
                        n.op.name(),
                        i
                    )));
                }
            }
            defined.extend(
                n.outputs
                    .iter()
                    .filter(|s| !s.is_empty())
                    .map(String::as_str),
            );
        }
        for o in &self.outputs {
            if !defined.contains(o.name.as_str()) {
                return Err(Error::InvalidModel(format!(
                    "graph output '{}' is never produced",
                    o.name
                )));
            }
        }
        Ok(())
    }

    /// Sorts nodes topologically (ONNX requires it, but not every exporter complies).
    pub fn sort_topologically(&mut self) -> Result<()> {
        let mut defined: HashSet<String> = self.inputs.iter().map(|v| v.name.clone()).collect();
        defined.extend(self.constants.keys().cloned());
        let mut pending: Vec<Node> = std::mem::take(&mut self.nodes);
        let mut sorted = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let before = pending.len();
            let mut rest = Vec::new();
            for n in pending {
                if n.inputs.iter().all(|i| i.is_empty() || defined.contains(i)) {
                    defined.extend(n.outputs.iter().cloned());
                    sorted.push(n);
                } else {
                    rest.push(n);
                }
            }
            if rest.len() == before {
                let n = &rest[0];
                let missing: Vec<&String> = n
                    .inputs
                    .iter()
                    .filter(|i| !i.is_empty() && !defined.contains(*i))
                    .collect();
                return Err(Error::InvalidModel(format!(
                    "node '{}' ({}) reads {:?}, which nothing defines (or the graph has a cycle)",
                    n.name,
                    n.op.name(),
                    missing
                )));
            }
            pending = rest;
        }
        self.nodes = sorted;
        Ok(())
    }

    /// A value name not yet used in the graph, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let taken = |s: &str| {
            self.constants.contains_key(s)
                || self.inputs.iter().any(|v| v.name == s)
                || self.nodes.iter().any(|n| n.outputs.iter().any(|o| o == s))
        };
        let mut i = 0;
        loop {
            let cand = format!("{base}__{i}");
            if !taken(&cand) {
                return cand;
            }
            i += 1;
        }
    }

    /// Counts of each op type, for reports.
    pub fn op_histogram(&self) -> Vec<(&'static str, usize)> {
        let mut h: HashMap<&'static str, usize> = HashMap::new();
        for n in &self.nodes {
            *h.entry(n.op.name()).or_default() += 1;
        }
        let mut v: Vec<_> = h.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }
}
