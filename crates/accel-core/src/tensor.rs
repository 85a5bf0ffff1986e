//! Dense, contiguous, row-major tensors and borrowed views of them.

use crate::{DType, Error, Result};
use half::f16;

/// Typed storage of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

/// Borrowed typed storage.
#[derive(Clone, Copy, Debug)]
pub enum TensorDataRef<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    U8(&'a [u8]),
    Bool(&'a [bool]),
}

/// Element types that can live in a tensor; lets data-movement code be written once.
pub trait Element: Copy + Default + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    const DTYPE: DType;
    fn wrap(v: Vec<Self>) -> TensorData;
    fn slice(d: &TensorData) -> Option<&[Self]>;
    fn slice_mut(d: &mut TensorData) -> Option<&mut [Self]>;
    fn slice_ref<'a>(d: TensorDataRef<'a>) -> Option<&'a [Self]>;
    fn wrap_ref(s: &[Self]) -> TensorDataRef<'_>;
    fn unwrap(d: TensorData) -> Result<Vec<Self>, TensorData>;
}

macro_rules! element {
    ($t:ty, $v:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$v;
            fn wrap(v: Vec<Self>) -> TensorData {
                TensorData::$v(v)
            }
            fn slice(d: &TensorData) -> Option<&[Self]> {
                match d {
                    TensorData::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(d: &mut TensorData) -> Option<&mut [Self]> {
                match d {
                    TensorData::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_ref<'a>(d: TensorDataRef<'a>) -> Option<&'a [Self]> {
                match d {
                    TensorDataRef::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap_ref(s: &[Self]) -> TensorDataRef<'_> {
                TensorDataRef::$v(s)
            }
            fn unwrap(d: TensorData) -> Result<Vec<Self>, TensorData> {
                match d {
                    TensorData::$v(v) => Ok(v),
                    other => Err(other),
                }
            }
        }
    };
}
element!(f32, F32);
element!(f16, F16);
element!(i64, I64);
element!(i32, I32);
element!(u8, U8);
element!(bool, Bool);

/// Runs `$body` with `$v` bound to the typed `Vec`/slice of `$data` and `$T` to its element type.
#[macro_export]
macro_rules! dispatch_data {
    ($data:expr, $T:ident, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::F32($v) => {
                type $T = f32;
                $body
            }
            $crate::TensorData::F16($v) => {
                type $T = $crate::half::f16;
                $body
            }
            $crate::TensorData::I64($v) => {
                type $T = i64;
                $body
            }
            $crate::TensorData::I32($v) => {
                type $T = i32;
                $body
            }
            $crate::TensorData::U8($v) => {
                type $T = u8;
                $body
            }
            $crate::TensorData::Bool($v) => {
                type $T = bool;
                $body
            }
        }
    };
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::U8(_) => DType::U8,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        dispatch_data!(self, _T, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_ref(&self) -> TensorDataRef<'_> {
        match self {
            TensorData::F32(v) => TensorDataRef::F32(v),
            TensorData::F16(v) => TensorDataRef::F16(v),
            TensorData::I64(v) => TensorDataRef::I64(v),
            TensorData::I32(v) => TensorDataRef::I32(v),
            TensorData::U8(v) => TensorDataRef::U8(v),
            TensorData::Bool(v) => TensorDataRef::Bool(v),
        }
    }

    pub fn zeros(dtype: DType, len: usize) -> TensorData {
        match dtype {
            DType::F32 => TensorData::F32(vec![0.0; len]),
            DType::F16 => TensorData::F16(vec![f16::ZERO; len]),
            DType::I64 => TensorData::I64(vec![0; len]),
            DType::I32 => TensorData::I32(vec![0; len]),
            DType::U8 => TensorData::U8(vec![0; len]),
            DType::Bool => TensorData::Bool(vec![false; len]),
        }
    }
}

impl TensorDataRef<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            TensorDataRef::F32(_) => DType::F32,
            TensorDataRef::F16(_) => DType::F16,
            TensorDataRef::I64(_) => DType::I64,
            TensorDataRef::I32(_) => DType::I32,
            TensorDataRef::U8(_) => DType::U8,
            TensorDataRef::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorDataRef::F32(v) => v.len(),
            TensorDataRef::F16(v) => v.len(),
            TensorDataRef::I64(v) => v.len(),
            TensorDataRef::I32(v) => v.len(),
            TensorDataRef::U8(v) => v.len(),
            TensorDataRef::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_owned(&self) -> TensorData {
        match *self {
            TensorDataRef::F32(v) => TensorData::F32(v.to_vec()),
            TensorDataRef::F16(v) => TensorData::F16(v.to_vec()),
            TensorDataRef::I64(v) => TensorData::I64(v.to_vec()),
            TensorDataRef::I32(v) => TensorData::I32(v.to_vec()),
            TensorDataRef::U8(v) => TensorData::U8(v.to_vec()),
            TensorDataRef::Bool(v) => TensorData::Bool(v.to_vec()),
        }
    }
}

/// An owned tensor: shape plus contiguous row-major data.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// A borrowed tensor, e.g. a caller's input buffer.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    shape: &'a [usize],
    data: TensorDataRef<'a>,
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The most elements accel allocates for one tensor (2^31, i.e. 8 GiB of f32). Larger shapes
/// come from corrupt models or runaway shape arithmetic, not from edge workloads.
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 31;

/// Element count of `shape`; a shape error when it overflows or exceeds
/// [`MAX_TENSOR_ELEMENTS`]. Call it before allocating a tensor whose shape came from a model.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    if shape.contains(&0) {
        return Ok(0);
    }
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
        .ok_or_else(|| {
            Error::Shape(format!(
                "a tensor of shape {shape:?} would hold more than {MAX_TENSOR_ELEMENTS} elements; the model's shape values are corrupt or far too large"
            ))
        })
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor> {
        if numel(&shape) != data.len() {
            return Err(Error::Shape(format!(
                "shape {shape:?} holds {} elements but {} were given",
                numel(&shape),
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    pub fn from_vec<T: Element>(shape: Vec<usize>, v: Vec<T>) -> Result<Tensor> {
        Tensor::new(shape, T::wrap(v))
    }

    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor {
            shape: vec![],
            data: T::wrap(vec![v]),
        }
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = numel(&shape);
        Tensor {
            shape,
            data: TensorData::zeros(dtype, n),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut TensorData {
        &mut self.data
    }

    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            shape: &self.shape,
            data: self.data.as_ref(),
        }
    }

    /// The elements as `T`, or a dtype error naming what the tensor holds.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        T::slice(&self.data).ok_or_else(|| self.dtype_error(T::DTYPE))
    }

    pub fn as_slice_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        let dt = self.dtype();
        T::slice_mut(&mut self.data)
            .ok_or_else(|| Error::Other(format!("expected {} tensor, got {dt}", T::DTYPE)))
    }

    pub fn into_vec<T: Element>(self) -> Result<Vec<T>> {
        T::unwrap(self.data)
            .map_err(|d| Error::Other(format!("expected {} tensor, got {}", T::DTYPE, d.dtype())))
    }

    fn dtype_error(&self, want: DType) -> Error {
        Error::Other(format!("expected {want} tensor, got {}", self.dtype()))
    }

    /// Same data, new shape with the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor> {
        Tensor::new(shape, self.data)
    }

    /// Integer contents widened to i64 (for shape-like tensors: axes, pads, indices).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        match &self.data {
            TensorData::I64(v) => Ok(v.clone()),
            TensorData::I32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            TensorData::U8(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            TensorData::Bool(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            other => Err(Error::Other(format!(
                "expected an integer tensor, got {}",
                other.dtype()
            ))),
        }
    }

    /// Float contents widened to f32 (f16 is converted).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        match &self.data {
            TensorData::F32(v) => Ok(v.clone()),
            TensorData::F16(v) => Ok(v.iter().map(|x| x.to_f32()).collect()),
            TensorData::I64(v) => Ok(v.iter().map(|&x| x as f32).collect()),
            TensorData::I32(v) => Ok(v.iter().map(|&x| x as f32).collect()),
            TensorData::U8(v) => Ok(v.iter().map(|&x| x as f32).collect()),
            TensorData::Bool(v) => Ok(v.iter().map(|&x| x as u8 as f32).collect()),
        }
    }
}

impl<'a> TensorView<'a> {
    pub fn new(shape: &'a [usize], data: TensorDataRef<'a>) -> Result<TensorView<'a>> {
        if numel(shape) != data.len() {
            return Err(Error::Shape(format!(
                "shape {shape:?} holds {} elements but the buffer has {}",
                numel(shape),
                data.len()
            )));
        }
        Ok(TensorView { shape, data })
    }

    pub fn from_slice<T: Element>(shape: &'a [usize], data: &'a [T]) -> Result<TensorView<'a>> {
        TensorView::new(shape, T::wrap_ref(data))
    }

    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn data(&self) -> TensorDataRef<'a> {
        self.data
    }

    pub fn as_slice<T: Element>(&self) -> Result<&'a [T]> {
        T::slice_ref(self.data).ok_or_else(|| {
            Error::Other(format!(
                "expected {} tensor, got {}",
                T::DTYPE,
                self.dtype()
            ))
        })
    }

    pub fn to_tensor(&self) -> Tensor {
        Tensor {
            shape: self.shape.to_vec(),
            data: self.data.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_element_count() {
        assert!(Tensor::from_vec(vec![2, 3], vec![1.0f32; 5]).is_err());
        let t = Tensor::from_vec(vec![2, 3], vec![1.0f32; 6]).unwrap();
        assert_eq!(t.dtype(), DType::F32);
        assert_eq!(t.view().as_slice::<f32>().unwrap().len(), 6);
        assert!(t.as_slice::<i64>().is_err());
        assert_eq!(t.clone().into_vec::<f32>().unwrap(), vec![1.0; 6]);
        assert!(t.into_vec::<i64>().is_err());
    }
}
