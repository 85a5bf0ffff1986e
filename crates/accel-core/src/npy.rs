//! `.npy` files in and out (NumPy's format), through the `npyz` crate.

use crate::{DType, Error, Result, Tensor, TensorData};
use half::f16;
use npyz::WriterBuilder;
use std::path::Path;

fn npy_err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Npy {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| npy_err(path, format!("not a valid .npy file ({e})")))?;
    if npy.order() == npyz::Order::Fortran {
        return Err(npy_err(
            path,
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray",
        ));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => {
            return Err(npy_err(
                path,
                format!("structured dtype {} is not supported", other.descr()),
            ));
        }
    };
    let bad = |e: std::io::Error| npy_err(path, format!("cannot read data ({e})"));
    let data = match descr.trim_start_matches(['<', '|', '=']) {
        "f4" => TensorData::F32(npy.into_vec::<f32>().map_err(bad)?),
        "f2" => TensorData::F16(npy.into_vec::<f16>().map_err(bad)?),
        "i8" => TensorData::I64(npy.into_vec::<i64>().map_err(bad)?),
        "i4" => TensorData::I32(npy.into_vec::<i32>().map_err(bad)?),
        "u1" => TensorData::U8(npy.into_vec::<u8>().map_err(bad)?),
        "b1" => TensorData::Bool(npy.into_vec::<bool>().map_err(bad)?),
        other => {
            return Err(npy_err(
                path,
                format!(
                    "dtype '{other}' is not supported (use float32, float16, int64, int32, uint8 or bool)"
                ),
            ));
        }
    };
    Tensor::new(shape, data).map_err(|e| npy_err(path, e))
}

pub fn write_npy(path: impl AsRef<Path>, t: &Tensor) -> Result<()> {
    let path = path.as_ref();
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let io = |e: std::io::Error| Error::io(path, e);
    macro_rules! write_all {
        ($v:expr, $ty:ty) => {{
            let mut writer = npyz::WriteOptions::<$ty>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut w)
                .begin_nd()
                .map_err(io)?;
            writer.extend($v.iter().copied()).map_err(io)?;
            writer.finish().map_err(io)?;
        }};
    }
    match t.data() {
        TensorData::F32(v) => write_all!(v, f32),
        TensorData::F16(v) => write_all!(v, f16),
        TensorData::I64(v) => write_all!(v, i64),
        TensorData::I32(v) => write_all!(v, i32),
        TensorData::U8(v) => write_all!(v, u8),
        TensorData::Bool(v) => write_all!(v, bool),
    }
    Ok(())
}

/// The dtype a `.npy` descriptor maps to, for messages.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::I64 => "int64",
        DType::I32 => "int32",
        DType::U8 => "uint8",
        DType::Bool => "bool",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_every_dtype() {
        let dir = std::env::temp_dir().join(format!("accel-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tensors = [
            Tensor::from_vec(vec![2, 3], vec![1.5f32, -2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
            Tensor::from_vec(vec![2], vec![f16::from_f32(0.5), f16::from_f32(-1.0)]).unwrap(),
            Tensor::from_vec(vec![3], vec![1i64, -2, 3]).unwrap(),
            Tensor::from_vec(vec![1, 2], vec![7i32, 8]).unwrap(),
            Tensor::from_vec(vec![2], vec![0u8, 255]).unwrap(),
            Tensor::from_vec(vec![2], vec![true, false]).unwrap(),
        ];
        for (i, t) in tensors.iter().enumerate() {
            let p = dir.join(format!("{i}.npy"));
            write_npy(&p, t).unwrap();
            assert_eq!(&read_npy(&p).unwrap(), t);
        }
        std::fs::write(dir.join("bad.npy"), b"not numpy").unwrap();
        assert!(matches!(
            read_npy(dir.join("bad.npy")),
            Err(Error::Npy { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
