//! ModelProto -> Graph.

use super::ops::{self, Converted, ImportCtx};
use super::proto::{self, ModelProto};
use super::tensor::tensor_from_proto;
use crate::ir::{Dim, Graph, ValueInfo};
use crate::{DType, Error, Result};
use prost::Message;
use std::path::Path;
use std::sync::Arc;

/// Oldest and newest default-domain opsets the importer accepts. Opsets 11-21 are what the
/// seed exporters produce; the rest is covered by the ONNX node conformance cases.
pub const MIN_OPSET: i64 = 7;
pub const MAX_OPSET: i64 = 25;

/// Loads a model from a file; external data is looked up next to it.
pub fn load_model(path: impl AsRef<Path>) -> Result<Graph> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut graph = parse_model(&bytes, path.parent()).map_err(|e| match e {
        Error::InvalidModel(m) => Error::InvalidModel(format!("{}: {m}", path.display())),
        other => other,
    })?;
    if let Some(src) = graph.source.as_mut() {
        src.path = Some(path.to_path_buf());
    }
    Ok(graph)
}

/// Parses ModelProto bytes. `base_dir` locates external data files.
pub fn parse_model(bytes: &[u8], base_dir: Option<&Path>) -> Result<Graph> {
    if bytes.is_empty() {
        return Err(Error::InvalidModel("the file is empty".into()));
    }
    let model = ModelProto::decode(bytes).map_err(|e| {
        Error::InvalidModel(format!(
            "protobuf decoding failed ({e}); the file is truncated or not an ONNX model"
        ))
    })?;
    let g = model.graph.as_ref().ok_or_else(|| {
        Error::InvalidModel(
            "the model has no graph; the file is truncated or not an ONNX model".into(),
        )
    })?;
    let opset = default_opset(&model)?;

    let mut graph = Graph {
        name: g.name().to_string(),
        opset,
        source: Some(crate::ir::ModelSource {
            path: None,
            bytes: std::sync::Arc::new(bytes.to_vec()),
        }),
        ..Default::default()
    };
    for init in &g.initializer {
        if init.name().is_empty() {
            return Err(Error::InvalidModel("an initializer has no name".into()));
        }
        graph.constants.insert(
            init.name().to_string(),
            Arc::new(tensor_from_proto(init, base_dir)?),
        );
    }
    if !g.sparse_initializer.is_empty() {
        return Err(Error::InvalidModel(
            "sparse initializers are not supported".into(),
        ));
    }
    for vi in &g.input {
        // Older exporters list initializers among the inputs; they stay constants here.
        if !graph.constants.contains_key(vi.name()) {
            graph.inputs.push(value_info(vi)?);
        }
    }
    for vi in &g.output {
        graph.outputs.push(value_info(vi)?);
    }
    for vi in &g.value_info {
        if let Ok(v) = value_info(vi) {
            graph.value_info.insert(v.name.clone(), v);
        }
    }

    let mut ctx = ImportCtx {
        opset,
        graph: &mut graph,
    };
    for (i, node) in g.node.iter().enumerate() {
        let name = if node.name().is_empty() {
            format!("{}_{i}", node.op_type())
        } else {
            node.name().to_string()
        };
        match ops::convert(node, &name, &mut ctx)? {
            Converted::Node(n) => ctx.graph.nodes.push(n),
            Converted::Constant(out, t) => {
                ctx.graph.constants.insert(out, Arc::new(t));
            }
        }
    }
    graph.sort_topologically()?;
    graph.validate()?;
    Ok(graph)
}

fn default_opset(model: &ModelProto) -> Result<i64> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map(|o| o.version())
        // IR version 3 and older files may omit opset_import; ONNX then means opset 1.
        .unwrap_or(1);
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(Error::InvalidModel(format!(
            "default-domain opset {opset} is outside the supported range {MIN_OPSET}..={MAX_OPSET}; re-export the model with opset 17"
        )));
    }
    Ok(opset)
}

fn value_info(vi: &proto::ValueInfoProto) -> Result<ValueInfo> {
    use proto::tensor_shape_proto::dimension::Value as D;
    use proto::type_proto::Value as T;
    let name = vi.name().to_string();
    let Some(T::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(Error::InvalidModel(format!(
            "value '{name}' is not a tensor (sequences and maps are not supported)"
        )));
    };
    let dtype = DType::from_onnx_code(tt.elem_type.unwrap_or(0))
        .map_err(|ty| Error::UnsupportedDType(format!("{ty} (value '{name}')")))?;
    let shape = tt.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .enumerate()
            .map(|(i, d)| match &d.value {
                Some(D::DimValue(v)) if *v > 0 => Dim::Known(*v as usize),
                Some(D::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                _ => Dim::Sym(format!("{name}_dim{i}")),
            })
            .collect()
    });
    Ok(ValueInfo { name, dtype, shape })
}
