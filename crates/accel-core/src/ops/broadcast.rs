//! Numpy-style broadcasting: binary arithmetic, comparisons and Where.

use super::layout::cast;
use crate::ir::BinaryOp;
use crate::{DType, Error, Result, Tensor, TensorData, shape_err};
use half::f16;

pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(shape_err!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

/// Strides of `shape` laid out in `out`'s rank, 0 along broadcast axes.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; out.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let oi = i + out.len() - shape.len();
        strides[oi] = if shape[i] == 1 { 0 } else { s };
        s *= shape[i];
    }
    strides
}

/// Applies `f` elementwise over broadcast operands.
fn zip_broadcast<A: Copy, B: Copy, O: Copy + Default>(
    a: &[A],
    ash: &[usize],
    b: &[B],
    bsh: &[usize],
    f: impl Fn(A, B) -> O,
) -> Result<(Vec<usize>, Vec<O>)> {
    let out_shape = broadcast_shapes(ash, bsh)?;
    let mut out = vec![O::default(); crate::checked_numel(&out_shape)?];
    zip_broadcast_into(a, ash, b, bsh, &out_shape, &mut out, f);
    Ok((out_shape, out))
}

/// `out` (of `out_shape`, the broadcast of `ash` and `bsh`) = f(a, b) elementwise. The
/// innermost axis runs as a tight loop.
pub fn zip_broadcast_into<A: Copy, B: Copy, O>(
    a: &[A],
    ash: &[usize],
    b: &[B],
    bsh: &[usize],
    out_shape: &[usize],
    out: &mut [O],
    f: impl Fn(A, B) -> O,
) {
    let n = out.len();
    if ash == bsh {
        out.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(o, (&x, &y))| *o = f(x, y));
        return;
    }
    if b.len() == 1 {
        let y = b[0];
        out.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x, y));
        return;
    }
    if a.len() == 1 {
        let x = a[0];
        out.iter_mut().zip(b).for_each(|(o, &y)| *o = f(x, y));
        return;
    }
    if n == 0 {
        return;
    }
    let rank = out_shape.len();
    let sa = broadcast_strides(ash, out_shape);
    let sb = broadcast_strides(bsh, out_shape);
    let inner = out_shape[rank - 1];
    let (ia, ib) = (sa[rank - 1], sb[rank - 1]);
    let mut idx = vec![0usize; rank - 1];
    let (mut oa, mut ob) = (0usize, 0usize);
    for row in out.chunks_exact_mut(inner) {
        for (k, o) in row.iter_mut().enumerate() {
            *o = f(a[oa + k * ia], b[ob + k * ib]);
        }
        // Advance the odometer over the outer axes.
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < out_shape[d] {
                break;
            }
            oa -= sa[d] * out_shape[d];
            ob -= sb[d] * out_shape[d];
            idx[d] = 0;
        }
    }
}

fn arith<T: Copy + PartialOrd>(
    op: BinaryOp,
    add: fn(T, T) -> T,
    sub: fn(T, T) -> T,
    mul: fn(T, T) -> T,
    div: fn(T, T) -> T,
    pow: fn(T, T) -> T,
) -> Option<fn(T, T) -> T> {
    Some(match op {
        BinaryOp::Add => add,
        BinaryOp::Sub => sub,
        BinaryOp::Mul => mul,
        BinaryOp::Div => div,
        BinaryOp::Pow => pow,
        BinaryOp::Max => |x, y| if y > x { y } else { x },
        BinaryOp::Min => |x, y| if y < x { y } else { x },
        _ => return None,
    })
}

fn compare<T: PartialOrd + Copy>(op: BinaryOp) -> Option<fn(T, T) -> bool> {
    Some(match op {
        BinaryOp::Equal => |x, y| x == y,
        BinaryOp::Less => |x, y| x < y,
        BinaryOp::Greater => |x, y| x > y,
        _ => return None,
    })
}

/// The f32 function of an arithmetic binary op (None for comparisons and logic).
pub fn f32_op(op: BinaryOp) -> Option<fn(f32, f32) -> f32> {
    arith::<f32>(
        op,
        |x, y| x + y,
        |x, y| x - y,
        |x, y| x * y,
        |x, y| x / y,
        f32::powf,
    )
}

macro_rules! int_op {
    ($t:ty, $op:expr) => {
        arith::<$t>(
            $op,
            |x, y| x.wrapping_add(y),
            |x, y| x.wrapping_sub(y),
            |x, y| x.wrapping_mul(y),
            // Integer division by zero has no defined result in ONNX; 0 avoids a panic.
            |x, y| if y == 0 { 0 } else { x.wrapping_div(y) },
            |x, y| {
                if y < 0 as $t {
                    0
                } else {
                    x.wrapping_pow(y as u32)
                }
            },
        )
    };
}

pub fn eval_binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if op == BinaryOp::Pow && a.dtype() != b.dtype() && b.dtype() != DType::Bool {
        return pow_mixed(a, b);
    }
    let (ash, bsh) = (a.shape(), b.shape());
    let mismatch = || {
        Error::Other(format!(
            "{op:?} got mixed dtypes {} and {}",
            a.dtype(),
            b.dtype()
        ))
    };
    let unsupported = || Error::Other(format!("{op:?} is not defined for {}", a.dtype()));
    let (shape, data) = match (a.data(), b.data()) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            if let Some(f) = f32_op(op) {
                let (s, v) = zip_broadcast(x, ash, y, bsh, f)?;
                (s, TensorData::F32(v))
            } else {
                let f = compare::<f32>(op).ok_or_else(unsupported)?;
                let (s, v) = zip_broadcast(x, ash, y, bsh, f)?;
                (s, TensorData::Bool(v))
            }
        }
        (TensorData::F16(x), TensorData::F16(y)) => {
            if let Some(f) = f32_op(op) {
                let (s, v) = zip_broadcast(x, ash, y, bsh, |p: f16, q: f16| {
                    f16::from_f32(f(p.to_f32(), q.to_f32()))
                })?;
                (s, TensorData::F16(v))
            } else {
                let f = compare::<f16>(op).ok_or_else(unsupported)?;
                let (s, v) = zip_broadcast(x, ash, y, bsh, f)?;
                (s, TensorData::Bool(v))
            }
        }
        (TensorData::I64(x), TensorData::I64(y)) => {
            if let Some(f) = int_op!(i64, op) {
                let (s, v) = zip_broadcast(x, ash, y, bsh, f)?;
                (s, TensorData::I64(v))
            } else {
                let f = compare::<i64>(op).ok_or_else(unsupported)?;
                let (s, v) = zip_broadcast(x, ash, y, bsh, f)?;
                (s, TensorData::Bool(v))
            }
        }
        (TensorData::I32(x), TensorData::I32(y)) => {
            if let Some(f) = int_op!(i32, op) {
                let (s, v) = zip_broadcast(x, ash, y, bsh, f)?;
                (s, TensorData::I32(v))
            } else {
                let f = compare::<i32>(op).ok_or_else(unsupported)?;
                let (s, v) = zip_broadcast(x, ash, y, bsh, f)?;
                (s, TensorData::Bool(v))
            }
        }
        (TensorData::U8(x), TensorData::U8(y)) => {
            if let Some(f) = int_op!(u8, op) {
                let (s, v) = zip_broadcast(x, ash, y, bsh, f)?;
                (s, TensorData::U8(v))
            } else {
                let f = compare::<u8>(op).ok_or_else(unsupported)?;
                let (s, v) = zip_broadcast(x, ash, y, bsh, f)?;
                (s, TensorData::Bool(v))
            }
        }
        (TensorData::Bool(x), TensorData::Bool(y)) => {
            let f: fn(bool, bool) -> bool = match op {
                BinaryOp::And => |p, q| p && q,
                BinaryOp::Or => |p, q| p || q,
                BinaryOp::Equal => |p, q| p == q,
                _ => return Err(unsupported()),
            };
            let (s, v) = zip_broadcast(x, ash, y, bsh, f)?;
            (s, TensorData::Bool(v))
        }
        _ => return Err(mismatch()),
    };
    Tensor::new(shape, data)
}

/// Pow(T, T1): the exponent may have another numeric type; the result has the base's type.
/// A float base is raised in f32; an integer base is raised in f64 and truncated, as in ONNX's
/// reference implementation.
fn pow_mixed(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype().is_float() {
        let p = eval_binary(BinaryOp::Pow, &cast(a, DType::F32)?, &cast(b, DType::F32)?)?;
        return cast(&p, a.dtype());
    }
    if a.dtype() == DType::Bool {
        return Err(Error::Other("Pow is not defined for bool".into()));
    }
    let wide = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(if t.dtype().is_float() {
            t.to_f32_vec()?.into_iter().map(f64::from).collect()
        } else {
            t.to_i64_vec()?.into_iter().map(|v| v as f64).collect()
        })
    };
    let (x, y) = (wide(a)?, wide(b)?);
    let (shape, v) = zip_broadcast(&x, a.shape(), &y, b.shape(), f64::powf)?;
    let powers = Tensor::from_vec(shape, v.into_iter().map(|p| p as i64).collect::<Vec<_>>())?;
    cast(&powers, a.dtype())
}

pub fn eval_where(cond: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let c = cond.as_slice::<bool>()?;
    // Pair cond with x under broadcasting, then select against y.
    macro_rules! go {
        ($xv:expr, $yv:expr, $wrap:path) => {{
            let (_, picked_x) = zip_broadcast(c, cond.shape(), $xv, x.shape(), |c, v| (c, v))?;
            let csh = broadcast_shapes(cond.shape(), x.shape())?;
            let (s, out) = zip_broadcast(
                &picked_x,
                &csh,
                $yv,
                y.shape(),
                |(c, v), w| if c { v } else { w },
            )?;
            Tensor::new(s, $wrap(out))
        }};
    }
    match (x.data(), y.data()) {
        (TensorData::F32(a), TensorData::F32(b)) => go!(a, b, TensorData::F32),
        (TensorData::F16(a), TensorData::F16(b)) => go!(a, b, TensorData::F16),
        (TensorData::I64(a), TensorData::I64(b)) => go!(a, b, TensorData::I64),
        (TensorData::I32(a), TensorData::I32(b)) => go!(a, b, TensorData::I32),
        (TensorData::U8(a), TensorData::U8(b)) => go!(a, b, TensorData::U8),
        (TensorData::Bool(a), TensorData::Bool(b)) => go!(a, b, TensorData::Bool),
        _ => Err(Error::Other(format!(
            "Where got mixed dtypes {} and {}",
            x.dtype(),
            y.dtype()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_rows_and_columns() {
        let a = Tensor::from_vec(vec![2, 1], vec![1.0f32, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![3], vec![10.0f32, 20.0, 30.0]).unwrap();
        let c = eval_binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(
            c.as_slice::<f32>().unwrap(),
            &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]
        );
        assert!(
            eval_binary(
                BinaryOp::Add,
                &a,
                &Tensor::from_vec(vec![3, 1], vec![0f32; 3]).unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn where_broadcasts_all_three() {
        let c = Tensor::from_vec(vec![2, 1], vec![true, false]).unwrap();
        let x = Tensor::from_vec(vec![1, 2], vec![1i64, 2]).unwrap();
        let y = Tensor::scalar(9i64);
        let r = eval_where(&c, &x, &y).unwrap();
        assert_eq!(r.shape(), &[2, 2]);
        assert_eq!(r.as_slice::<i64>().unwrap(), &[1, 2, 9, 9]);
    }
}
