//! `TensorProto` <-> [`Tensor`]: raw_data, the typed repeated fields, and external data files.

use super::proto::TensorProto;
use crate::{DType, Error, Result, Tensor, TensorData};
use half::f16;
use std::path::Path;

/// Decodes a TensorProto. `base_dir` is where external data files are looked up (the model's
/// folder); `None` rejects external data.
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let name = t.name();
    let dtype = DType::from_onnx_code(t.data_type.unwrap_or(0))
        .map_err(|ty| Error::UnsupportedDType(format!("{ty} (tensor '{name}')")))?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        shape.push(usize::try_from(d).map_err(|_| {
            Error::InvalidModel(format!("tensor '{name}' has negative dimension {d}"))
        })?);
    }
    let n: usize = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            Error::InvalidModel(format!("tensor '{name}' has an absurd shape {shape:?}"))
        })?;

    let external;
    let raw: Option<&[u8]> = if t.data_location == Some(1) {
        external = read_external(t, base_dir)?;
        Some(&external)
    } else {
        t.raw_data.as_deref()
    };

    let data = match raw {
        Some(bytes) => decode_raw(dtype, bytes, n).ok_or_else(|| {
            Error::InvalidModel(format!(
                "tensor '{name}': {} bytes of data do not hold {n} {dtype} values (shape {shape:?})",
                bytes.len()
            ))
        })?,
        None => decode_typed(t, dtype),
    };
    if data.len() != n {
        return Err(Error::InvalidModel(format!(
            "tensor '{name}' declares shape {shape:?} ({n} values) but carries {}",
            data.len()
        )));
    }
    Tensor::new(shape, data)
}

fn read_external(t: &TensorProto, base_dir: Option<&Path>) -> Result<Vec<u8>> {
    let name = t.name();
    let entry = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key() == k)
            .map(|e| e.value().to_string())
    };
    let location = entry("location").ok_or_else(|| {
        Error::InvalidModel(format!("tensor '{name}' is external but names no location"))
    })?;
    let base = base_dir.ok_or_else(|| {
        Error::InvalidModel(format!(
            "tensor '{name}' keeps its data in external file '{location}'; load the model from a path so the file can be found"
        ))
    })?;
    // External data must stay inside the model's folder.
    if Path::new(&location).is_absolute() || location.split(['/', '\\']).any(|c| c == "..") {
        return Err(Error::InvalidModel(format!(
            "tensor '{name}': external data location '{location}' must be a relative path inside the model's folder"
        )));
    }
    let path = base.join(&location);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let parse = |k: &str| -> Result<Option<usize>> {
        entry(k)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| Error::InvalidModel(format!("tensor '{name}': bad {k} '{v}'")))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?.unwrap_or(bytes.len().saturating_sub(offset));
    let end = offset.checked_add(length).filter(|&e| e <= bytes.len()).ok_or_else(|| {
        Error::InvalidModel(format!(
            "tensor '{name}': external file {} has {} bytes, fewer than offset {offset} + length {length}",
            path.display(),
            bytes.len()
        ))
    })?;
    Ok(bytes[offset..end].to_vec())
}

fn decode_raw(dtype: DType, b: &[u8], n: usize) -> Option<TensorData> {
    if n.checked_mul(dtype.size_of()) != Some(b.len()) {
        return None;
    }
    Some(match dtype {
        DType::F32 => TensorData::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(le_bytes(c)))
                .collect(),
        ),
        DType::F16 => TensorData::F16(
            b.chunks_exact(2)
                .map(|c| f16::from_le_bytes(le_bytes(c)))
                .collect(),
        ),
        DType::I64 => TensorData::I64(
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(le_bytes(c)))
                .collect(),
        ),
        DType::I32 => TensorData::I32(
            b.chunks_exact(4)
                .map(|c| i32::from_le_bytes(le_bytes(c)))
                .collect(),
        ),
        DType::U8 => TensorData::U8(b.to_vec()),
        DType::Bool => TensorData::Bool(b.iter().map(|&x| x != 0).collect()),
    })
}

/// A chunk from `chunks_exact(N)` as an array (the length always matches).
fn le_bytes<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(c);
    a
}

fn decode_typed(t: &TensorProto, dtype: DType) -> TensorData {
    match dtype {
        DType::F32 => TensorData::F32(t.float_data.clone()),
        // float16, uint8 and bool travel in int32_data (f16 as its bit pattern).
        DType::F16 => TensorData::F16(
            t.int32_data
                .iter()
                .map(|&x| f16::from_bits(x as u16))
                .collect(),
        ),
        DType::I64 => TensorData::I64(t.int64_data.clone()),
        DType::I32 => TensorData::I32(t.int32_data.clone()),
        DType::U8 => TensorData::U8(t.int32_data.iter().map(|&x| x as u8).collect()),
        DType::Bool => TensorData::Bool(t.int32_data.iter().map(|&x| x != 0).collect()),
    }
}

/// Encodes a tensor as a TensorProto with raw_data.
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    let raw: Vec<u8> = match t.data() {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
    };
    TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(t.dtype().onnx_code()),
        name: Some(name.to_string()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_typed_agree() {
        let t = Tensor::from_vec(vec![2, 2], vec![1.5f32, -2.0, 3.25, 0.0]).unwrap();
        let p = tensor_to_proto("w", &t);
        assert_eq!(tensor_from_proto(&p, None).unwrap(), t);
        let typed = TensorProto {
            dims: vec![2, 2],
            data_type: Some(1),
            float_data: vec![1.5, -2.0, 3.25, 0.0],
            ..Default::default()
        };
        assert_eq!(tensor_from_proto(&typed, None).unwrap(), t);
    }

    #[test]
    fn short_raw_data_is_an_error() {
        let mut p = tensor_to_proto(
            "w",
            &Tensor::from_vec(vec![4], vec![1i64, 2, 3, 4]).unwrap(),
        );
        p.raw_data.as_mut().unwrap().truncate(10);
        let e = tensor_from_proto(&p, None).unwrap_err().to_string();
        assert!(e.contains("'w'"), "{e}");
    }

    #[test]
    fn external_data_is_read_and_confined() {
        let dir = std::env::temp_dir().join(format!("accel-ext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vals = [1.0f32, 2.0, 3.0];
        let mut bytes = vec![0u8; 8];
        bytes.extend(vals.iter().flat_map(|x| x.to_le_bytes()));
        std::fs::write(dir.join("w.bin"), &bytes).unwrap();
        let kv = |k: &str, v: &str| super::super::proto::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v.into()),
        };
        let mut p = TensorProto {
            dims: vec![3],
            data_type: Some(1),
            name: Some("w".into()),
            data_location: Some(1),
            external_data: vec![
                kv("location", "w.bin"),
                kv("offset", "8"),
                kv("length", "12"),
            ],
            ..Default::default()
        };
        assert_eq!(
            tensor_from_proto(&p, Some(&dir))
                .unwrap()
                .as_slice::<f32>()
                .unwrap(),
            &vals
        );
        assert!(tensor_from_proto(&p, None).is_err());
        p.external_data[0] = kv("location", "../etc/passwd");
        assert!(tensor_from_proto(&p, Some(&dir)).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
