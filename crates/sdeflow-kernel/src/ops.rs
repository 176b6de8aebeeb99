//! Small tensor helpers shared by the kernel and the plugins.

use candle_core::{DType, Storage, Tensor, WithDType};

use crate::{Error, PerRow, Result};

/// `a·x + b·y` for scalars `a`, `b`. On the CPU, for contiguous f32/f64 tensors outside an
/// autograd graph, one pass and one allocation; elsewhere candle's ops. Both round
/// `(a·x) + (b·y)` in the tensors' dtype, so the results agree bit for bit.
pub fn lin2(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    if let Some(out) = fused(&[(a, x), (b, y)])? {
        return Ok(out);
    }
    Ok((x.affine(a, 0.0)? + y.affine(b, 0.0)?)?)
}

/// `a·x + b·y + c·z` for scalars `a`, `b`, `c`, rounded as `((a·x) + (b·y)) + (c·z)`; fused
/// on the CPU like [`lin2`].
pub fn lin3(a: f64, x: &Tensor, b: f64, y: &Tensor, c: f64, z: &Tensor) -> Result<Tensor> {
    if let Some(out) = fused(&[(a, x), (b, y), (c, z)])? {
        return Ok(out);
    }
    Ok(((x.affine(a, 0.0)? + y.affine(b, 0.0)?)? + z.affine(c, 0.0)?)?)
}

/// `a·x` with a per-call or per-row scalar: row i of `x` scaled by row i's value.
pub fn scale(a: &PerRow<f64>, x: &Tensor) -> Result<Tensor> {
    match a.column(x.rank(), x.dtype(), x.device())? {
        Some(col) => Ok(x.broadcast_mul(&col)?),
        None => match a {
            PerRow::Call(v) => Ok(x.affine(*v, 0.0)?),
            PerRow::Rows(_) => unreachable!("per-row values always give a column"),
        },
    }
}

/// `a·x + b·y` with per-call or per-row scalars: [`lin2`] when both are per call (the same
/// bits), else each row scaled by its own values.
pub fn lin2_rows(a: &PerRow<f64>, x: &Tensor, b: &PerRow<f64>, y: &Tensor) -> Result<Tensor> {
    if let (PerRow::Call(a), PerRow::Call(b)) = (a, b) {
        return lin2(*a, x, *b, y);
    }
    Ok((scale(a, x)? + scale(b, y)?)?)
}

/// Runs `f` on the contiguous CPU slices of `xs` in dtype `T`, or returns `None` when any is
/// on another device, strided, of another dtype or tracked by autograd.
fn with_cpu_slices<T: WithDType, R>(
    xs: &[&Tensor],
    f: impl FnOnce(&[&[T]]) -> R,
) -> Result<Option<R>> {
    if xs
        .iter()
        .any(|x| x.track_op() || x.dtype() != T::DTYPE || x.shape() != xs[0].shape())
    {
        return Ok(None);
    }
    let guards: Vec<_> = xs.iter().map(|x| x.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(xs.len());
    for (storage, layout) in &guards {
        let (Storage::Cpu(cpu), Some((start, end))) = (&**storage, layout.contiguous_offsets())
        else {
            return Ok(None);
        };
        slices.push(&cpu.as_slice::<T>()?[start..end]);
    }
    Ok(Some(f(&slices)))
}

macro_rules! fused_for {
    ($t:ty, $terms:expr) => {{
        let terms: &[(f64, &Tensor)] = $terms;
        let xs: Vec<&Tensor> = terms.iter().map(|(_, x)| *x).collect();
        let c: Vec<$t> = terms.iter().map(|(c, _)| *c as $t).collect();
        let out = with_cpu_slices::<$t, Vec<$t>>(&xs, |s| match s {
            [x, y] => x.iter().zip(*y).map(|(x, y)| c[0] * x + c[1] * y).collect(),
            [x, y, z] => x
                .iter()
                .zip(*y)
                .zip(*z)
                .map(|((x, y), z)| c[0] * x + c[1] * y + c[2] * z)
                .collect(),
            _ => unreachable!("fused takes two or three terms"),
        })?;
        match out {
            Some(v) => Some(Tensor::from_vec(v, xs[0].shape(), xs[0].device())?),
            None => None,
        }
    }};
}

/// Σ c_k x_k in one pass where [`with_cpu_slices`] applies.
fn fused(terms: &[(f64, &Tensor)]) -> Result<Option<Tensor>> {
    Ok(match terms[0].1.dtype() {
        DType::F32 => fused_for!(f32, terms),
        DType::F64 => fused_for!(f64, terms),
        _ => None,
    })
}

/// Whether every element of `x` is finite. On the CPU one pass over the data; elsewhere each
/// element times 0 is summed (0 when all are finite, NaN otherwise: unlike a plain sum, large
/// finite values cannot overflow it to ∞).
pub fn all_finite(x: &Tensor) -> Result<bool> {
    if let Some(ok) = with_cpu_slices::<f32, bool>(&[x], |s| s[0].iter().all(|v| v.is_finite()))? {
        return Ok(ok);
    }
    if let Some(ok) = with_cpu_slices::<f64, bool>(&[x], |s| s[0].iter().all(|v| v.is_finite()))? {
        return Ok(ok);
    }
    let s = x
        .affine(0.0, 0.0)?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    Ok(s.is_finite())
}

/// The first `limit` rows of `x` (`[n, ...]`) holding a NaN or an infinity, by position.
pub fn non_finite_rows(x: &Tensor, limit: usize) -> Result<Vec<usize>> {
    let n = x.dim(0)?;
    let values = host_f64(x)?;
    let cols = values.len() / n.max(1);
    Ok(values
        .chunks(cols.max(1))
        .enumerate()
        .filter(|(_, r)| r.iter().any(|v| !v.is_finite()))
        .map(|(i, _)| i)
        .take(limit)
        .collect())
}

/// Checks that `x` has `rows` rows, naming `what` otherwise.
pub fn expect_rows(x: &Tensor, rows: usize, what: &str) -> Result<()> {
    let n = x.dim(0)?;
    if n != rows {
        return Err(Error::Shape(format!(
            "{what} has {n} rows, expected {rows}"
        )));
    }
    Ok(())
}

/// The values of `t` on the host as f64, row-major (whatever its dtype and device).
pub fn host_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}
