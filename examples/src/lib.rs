//! Examples of sdeflow as a library; run them with
//! `cargo run --release -p sdeflow-examples --example <name>`:
//!
//! - `sample_ring`: compose VP + ε + the exact `ring` oracle + Euler–Maruyama through the
//!   registry, sample, and compare the moments and sliced W2 with the exact law.

use candle_core::{DType, Tensor};
use sdeflow_kernel::Result;

/// The sample mean and covariance of the rows of `x` (`[n, d]`).
pub fn moments(x: &Tensor) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let rows = x.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let n = rows.len() as f64;
    let d = rows.first().map_or(0, Vec::len);
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let cov = (0..d)
        .map(|a| {
            (0..d)
                .map(|b| {
                    rows.iter()
                        .map(|r| (r[a] - mean[a]) * (r[b] - mean[b]))
                        .sum::<f64>()
                        / (n - 1.0)
                })
                .collect()
        })
        .collect();
    Ok((mean, cov))
}
