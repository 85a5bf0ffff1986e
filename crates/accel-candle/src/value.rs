//! accel tensors to candle tensors and back. candle has no bool type: bools travel as u8
//! (0 or 1) beside their accel dtype, so they come back as bools.

use accel_core::{DType, Error, Result, Tensor, TensorData, TensorDataRef, TensorView};
use candle_core::{DType as CDType, Device, Tensor as CTensor};

/// A value of the graph while it runs: candle's tensor and the accel dtype it stands for.
#[derive(Clone, Debug)]
pub struct Value {
    pub t: CTensor,
    pub dtype: DType,
}

impl Value {
    pub fn new(t: CTensor, dtype: DType) -> Value {
        Value { t, dtype }
    }

    pub fn dims(&self) -> &[usize] {
        self.t.dims()
    }

    pub fn rank(&self) -> usize {
        self.t.rank()
    }

    pub fn is_float(&self) -> bool {
        matches!(self.dtype, DType::F32 | DType::F16)
    }

    /// The values as i64 on the host: shapes, axes, pads and indices given as tensors.
    pub fn to_i64s(&self) -> Result<Vec<i64>> {
        let flat = self.t.flatten_all().map_err(candle_err)?;
        let flat = if self.is_float() {
            flat.to_dtype(CDType::F64).map_err(candle_err)?
        } else {
            flat
        };
        let v = match flat.dtype() {
            CDType::F64 => flat
                .to_vec1::<f64>()
                .map_err(candle_err)?
                .into_iter()
                .map(|x| x as i64)
                .collect(),
            _ => flat
                .to_dtype(CDType::I64)
                .map_err(candle_err)?
                .to_vec1::<i64>()
                .map_err(candle_err)?,
        };
        Ok(v)
    }

    /// The values as f64 on the host (scalars such as Clip bounds or Range limits).
    pub fn to_f64s(&self) -> Result<Vec<f64>> {
        self.t
            .flatten_all()
            .and_then(|t| t.to_dtype(CDType::F64))
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(candle_err)
    }
}

pub fn candle_dtype(d: DType) -> CDType {
    match d {
        DType::F32 => CDType::F32,
        DType::F16 => CDType::F16,
        DType::I64 => CDType::I64,
        DType::I32 => CDType::I32,
        DType::U8 | DType::Bool => CDType::U8,
    }
}

/// A candle error as accel's: candle's message, which names the op and the shapes.
pub fn candle_err(e: candle_core::Error) -> Error {
    // Without the backtrace candle attaches when RUST_BACKTRACE is set: the message is
    // for a person, the trace points into candle.
    let mut e = e;
    while let candle_core::Error::WithBacktrace { inner, .. } = e {
        e = *inner;
    }
    Error::Other(format!("candle: {e}"))
}

pub fn to_candle(t: TensorView, device: &Device) -> Result<Value> {
    let shape = t.shape().to_vec();
    let r = match t.data() {
        TensorDataRef::F32(v) => CTensor::from_slice(v, shape, device),
        TensorDataRef::F16(v) => CTensor::from_slice(v, shape, device),
        TensorDataRef::I64(v) => CTensor::from_slice(v, shape, device),
        TensorDataRef::I32(v) => CTensor::from_slice(v, shape, device),
        TensorDataRef::U8(v) => CTensor::from_slice(v, shape, device),
        TensorDataRef::Bool(v) => {
            let bytes: Vec<u8> = v.iter().map(|&b| b as u8).collect();
            CTensor::from_vec(bytes, shape, device)
        }
    };
    Ok(Value::new(r.map_err(candle_err)?, t.dtype()))
}

pub fn to_accel(v: &Value) -> Result<Tensor> {
    let shape = v.dims().to_vec();
    let flat = v.t.flatten_all().map_err(candle_err)?;
    let want = candle_dtype(v.dtype);
    let flat = if flat.dtype() == want {
        flat
    } else {
        flat.to_dtype(want).map_err(candle_err)?
    };
    let data = match v.dtype {
        DType::F32 => TensorData::F32(flat.to_vec1().map_err(candle_err)?),
        DType::F16 => TensorData::F16(flat.to_vec1().map_err(candle_err)?),
        DType::I64 => TensorData::I64(flat.to_vec1().map_err(candle_err)?),
        DType::I32 => TensorData::I32(flat.to_vec1().map_err(candle_err)?),
        DType::U8 => TensorData::U8(flat.to_vec1().map_err(candle_err)?),
        DType::Bool => TensorData::Bool(
            flat.to_vec1::<u8>()
                .map_err(candle_err)?
                .into_iter()
                .map(|b| b != 0)
                .collect(),
        ),
    };
    Tensor::new(shape, data)
}
