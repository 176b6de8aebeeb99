//! Small tensor helpers shared by the kernel and the plugins.

use candle_core::Tensor;

use crate::{Error, Result};

/// `a·x + b·y` for scalars `a`, `b` (one fused expression instead of three temporaries in
/// callers' code).
pub fn lin2(a: f64, x: &Tensor, b: f64, y: &Tensor) -> Result<Tensor> {
    Ok((x.affine(a, 0.0)? + y.affine(b, 0.0)?)?)
}

/// `a·x + b·y + c·z` for scalars `a`, `b`, `c`.
pub fn lin3(a: f64, x: &Tensor, b: f64, y: &Tensor, c: f64, z: &Tensor) -> Result<Tensor> {
    Ok(((x.affine(a, 0.0)? + y.affine(b, 0.0)?)? + z.affine(c, 0.0)?)?)
}

/// Whether every element of `x` is finite. Each element times 0 is 0 when finite and NaN when
/// NaN or ±∞, so the sum is 0 or NaN: unlike a plain sum, large finite values cannot overflow
/// it to ∞.
pub fn all_finite(x: &Tensor) -> Result<bool> {
    let s = x
        .affine(0.0, 0.0)?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    Ok(s.is_finite())
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
