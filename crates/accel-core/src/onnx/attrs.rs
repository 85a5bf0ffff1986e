//! Typed access to a node's attributes, with errors that name the node.

use super::proto::{AttributeProto, NodeProto, TensorProto};
use crate::{Error, Result};

pub(crate) struct Attrs<'a> {
    node: &'a NodeProto,
}

impl<'a> Attrs<'a> {
    pub fn new(node: &'a NodeProto) -> Self {
        Attrs { node }
    }

    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == name)
    }

    pub fn err(&self, message: impl Into<String>) -> Error {
        Error::InvalidNode {
            node: self.node.name().to_string(),
            op_type: self.node.op_type().to_string(),
            message: message.into(),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|a| a.i)
    }

    pub fn int_or(&self, name: &str, default: i64) -> i64 {
        self.int(name).unwrap_or(default)
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        self.get(name).and_then(|a| a.f)
    }

    pub fn float_or(&self, name: &str, default: f32) -> f32 {
        self.float(name).unwrap_or(default)
    }

    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }

    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.get(name).map(|a| a.floats.clone())
    }

    pub fn string(&self, name: &str) -> Result<Option<String>> {
        match self.get(name).and_then(|a| a.s.as_ref()) {
            None => Ok(None),
            Some(b) => String::from_utf8(b.clone())
                .map(Some)
                .map_err(|_| self.err(format!("attribute '{name}' is not UTF-8"))),
        }
    }

    pub fn strings(&self, name: &str) -> Result<Option<Vec<String>>> {
        match self.get(name) {
            None => Ok(None),
            Some(a) => a
                .strings
                .iter()
                .map(|b| {
                    String::from_utf8(b.clone())
                        .map_err(|_| self.err(format!("attribute '{name}' is not UTF-8")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }

    /// Non-negative integers (kernel sizes, strides, pads).
    pub fn usizes(&self, name: &str) -> Result<Option<Vec<usize>>> {
        match self.ints(name) {
            None => Ok(None),
            Some(v) => v
                .into_iter()
                .map(|x| {
                    usize::try_from(x)
                        .map_err(|_| self.err(format!("attribute '{name}' has negative value {x}")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }
}
