//! Sliced Wasserstein-2 against exact samples, and its noise floor (DESIGN.md "Decisions").
//!
//! SW2 = sqrt(mean over 256 fixed unit directions of the squared 1-D W2) between n samples
//! and a fixed reference set of n exact samples. Its noise floor is the mean and standard
//! deviation over 20 independent exact sets; a sampler passes at SW2 ≤ mean + 3 sd.

use rayon::prelude::*;
use sdeflow_kernel::{
    Error, Result,
    mixture::Marginal,
    noise::{Stream, fill_normals_f64, philox_key},
};

/// Samples per set.
pub const SAMPLES: usize = 20_000;
/// Projection directions.
pub const DIRECTIONS: usize = 256;
/// Independent exact sets in the floor.
pub const FLOOR_SETS: usize = 20;

const DIRECTION_SEED: u64 = 0x5157_2d64_6972;
/// Seed of the reference set.
pub const REFERENCE_SEED: u64 = 1_000;
const FLOOR_SEED: u64 = 2_000;

/// 256 fixed random unit directions in `d` dimensions.
pub fn directions(d: usize) -> Vec<Vec<f64>> {
    let key = philox_key(DIRECTION_SEED, Stream::Exact);
    (0..DIRECTIONS as u64)
        .map(|i| {
            let mut v = vec![0.0; d];
            fill_normals_f64(key, i, 0, &mut v);
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / norm).collect()
        })
        .collect()
}

/// Sliced W2 against one fixed reference set, its projections sorted once.
#[derive(Debug, Clone)]
pub struct SlicedW2 {
    d: usize,
    dirs: Vec<Vec<f64>>,
    sorted_ref: Vec<Vec<f64>>,
}

fn sorted_projections(x: &[f64], dir: &[f64]) -> Vec<f64> {
    let mut p: Vec<f64> = x
        .chunks(dir.len())
        .map(|r| r.iter().zip(dir).map(|(a, b)| a * b).sum())
        .collect();
    p.sort_unstable_by(f64::total_cmp);
    p
}

impl SlicedW2 {
    /// Against `reference` (row-major, `d` columns).
    pub fn new(reference: &[f64], d: usize) -> Self {
        let dirs = directions(d);
        let sorted_ref = dirs
            .par_iter()
            .map(|dir| sorted_projections(reference, dir))
            .collect();
        Self {
            d,
            dirs,
            sorted_ref,
        }
    }

    /// SW2 of `samples` (same count as the reference).
    pub fn distance(&self, samples: &[f64]) -> Result<f64> {
        let n = self.sorted_ref[0].len();
        if samples.len() != n * self.d {
            return Err(Error::Shape(format!(
                "sliced W2 needs {n} × {} samples, got {} values",
                self.d,
                samples.len()
            )));
        }
        let total: f64 = self
            .dirs
            .par_iter()
            .zip(&self.sorted_ref)
            .map(|(dir, r)| {
                let p = sorted_projections(samples, dir);
                p.iter().zip(r).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / n as f64
            })
            .sum();
        Ok((total / self.dirs.len() as f64).sqrt())
    }
}

/// The SW2 noise floor of exact samplers at one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floor {
    /// Mean SW2 of exact sets against the reference.
    pub mean: f64,
    /// Their standard deviation.
    pub sd: f64,
}

impl Floor {
    /// The mean and standard deviation of the SW2 values of independent reference-law sets
    /// (at least two).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        Self {
            mean,
            sd: var.sqrt(),
        }
    }

    /// The pass threshold, mean + 3 sd.
    pub fn threshold(&self) -> f64 {
        self.mean + 3.0 * self.sd
    }
}

/// The reference metric and floor for the exact law `target` with `n` samples per set
/// ([`SAMPLES`] in conformance; a host run uses its own sample count so that its SW2 is
/// judged against the floor of the same n).
pub fn reference_and_floor(target: &Marginal, n: usize) -> Result<(SlicedW2, Floor)> {
    if n < 2 {
        return Err(Error::invalid(
            "sliced W2",
            "samples",
            format!("needs at least 2 samples, got {n}"),
        ));
    }
    let d = target.dim();
    let sw = SlicedW2::new(&target.sample(REFERENCE_SEED, 0, n), d);
    let vals = (0..FLOOR_SETS as u64)
        .map(|k| sw.distance(&target.sample(FLOOR_SEED + k, 0, n)))
        .collect::<Result<Vec<f64>>>()?;
    Ok((sw, Floor::of(&vals)))
}
