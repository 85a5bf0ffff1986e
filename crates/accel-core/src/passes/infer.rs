//! Shape inference over the whole graph, and specialisation to concrete input shapes.

use super::{fold_constants, remove_dead_nodes};
use crate::ir::{Dim, Graph, ValueInfo};
use crate::{Error, Result, ops};
use std::collections::HashMap;

/// Fills `graph.value_info` for every node output and refines the graph outputs' types.
pub fn infer_shapes(graph: &mut Graph) -> Result<()> {
    let mut inferred: HashMap<String, ValueInfo> = HashMap::new();
    for node in &graph.nodes {
        let lookup = |name: &str| -> Option<ValueInfo> {
            inferred
                .get(name)
                .cloned()
                .or_else(|| graph.value_type(name))
        };
        let types: Vec<_> = node
            .inputs
            .iter()
            .map(|i| {
                if i.is_empty() {
                    None
                } else {
                    lookup(i).map(|v| (v.dtype, v.shape))
                }
            })
            .collect();
        let consts: Vec<_> = node.inputs.iter().map(|i| graph.constant(i)).collect();
        let outs = ops::infer(node, &types, &consts)?;
        for (name, (dtype, shape)) in node.outputs.iter().zip(outs) {
            if !name.is_empty() {
                inferred.insert(
                    name.clone(),
                    ValueInfo {
                        name: name.clone(),
                        dtype,
                        shape,
                    },
                );
            }
        }
    }
    for out in graph.outputs.iter_mut() {
        if let Some(v) = inferred.get(&out.name).cloned().or_else(|| {
            graph.constants.get(&out.name).map(|t| {
                ValueInfo::new(
                    &out.name,
                    t.dtype(),
                    t.shape().iter().map(|&d| Dim::Known(d)).collect(),
                )
            })
        }) {
            out.dtype = v.dtype;
            out.shape = merge_shapes(out.shape.take(), v.shape);
        }
    }
    graph.value_info = inferred;
    Ok(())
}

/// Prefers known dims from either side; keeps declared symbol names where nothing is known.
fn merge_shapes(declared: Option<Vec<Dim>>, inferred: Option<Vec<Dim>>) -> Option<Vec<Dim>> {
    match (declared, inferred) {
        (Some(d), Some(i)) if d.len() == i.len() => Some(
            d.into_iter()
                .zip(i)
                .map(|(d, i)| match (&d, &i) {
                    (_, Dim::Known(_)) => i,
                    (Dim::Known(_), _) => d,
                    _ if i.to_string().contains(':') => d,
                    _ => i,
                })
                .collect(),
        ),
        (_, Some(i)) => Some(i),
        (d, None) => d,
    }
}

/// Checks concrete input shapes against the declared ones (symbols must bind consistently)
/// and returns the binding of each symbol.
pub fn bind_input_shapes(
    declared: &[ValueInfo],
    shapes: &[(&str, &[usize])],
) -> Result<HashMap<String, usize>> {
    let mut bound: HashMap<String, usize> = HashMap::new();
    for (name, shape) in shapes {
        let decl = declared
            .iter()
            .find(|v| v.name == *name)
            .ok_or_else(|| Error::Other(format!("the model has no input named '{name}'")))?;
        let Some(dims) = &decl.shape else { continue };
        let mismatch = || Error::ShapeMismatch {
            name: name.to_string(),
            expected: decl.shape_string(),
            actual: shape.to_vec(),
        };
        if dims.len() != shape.len() {
            return Err(mismatch());
        }
        for (d, &s) in dims.iter().zip(shape.iter()) {
            match d {
                Dim::Known(k) if *k != s => return Err(mismatch()),
                Dim::Sym(sym) if *bound.entry(sym.clone()).or_insert(s) != s => {
                    return Err(Error::ShapeMismatch {
                        name: name.to_string(),
                        expected: format!("{} with {sym} = {}", decl.shape_string(), bound[sym]),
                        actual: shape.to_vec(),
                    });
                }
                _ => {}
            }
        }
    }
    Ok(bound)
}

/// A copy of the graph with every input shape fixed: shape chains fold to constants and every
/// value gets a concrete shape.
pub fn specialize(graph: &Graph, shapes: &[(&str, &[usize])]) -> Result<Graph> {
    bind_input_shapes(&graph.inputs, shapes)?;
    let mut g = graph.clone();
    for (name, shape) in shapes {
        if let Some(v) = g.inputs.iter_mut().find(|v| v.name == *name) {
            v.shape = Some(shape.iter().map(|&d| Dim::Known(d)).collect());
        }
    }
    infer_shapes(&mut g)?;
    fold_constants(&mut g)?;
    remove_dead_nodes(&mut g);
    infer_shapes(&mut g)?;
    Ok(g)
}

/// Checks run-time inputs against the declared graph inputs (in order): count, dtype, and
/// shape, with symbolic dimensions bound consistently. Every backend calls this before running.
pub fn check_inputs(declared: &[ValueInfo], inputs: &[crate::TensorView]) -> Result<()> {
    if inputs.len() != declared.len() {
        return Err(Error::InputCount {
            expected: declared.len(),
            actual: inputs.len(),
            names: declared
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut shapes = Vec::with_capacity(inputs.len());
    for (vi, t) in declared.iter().zip(inputs) {
        if t.dtype() != vi.dtype {
            return Err(Error::DTypeMismatch {
                name: vi.name.clone(),
                expected: vi.dtype,
                actual: t.dtype(),
            });
        }
        shapes.push((vi.name.as_str(), t.shape()));
    }
    bind_input_shapes(declared, &shapes)?;
    Ok(())
}
