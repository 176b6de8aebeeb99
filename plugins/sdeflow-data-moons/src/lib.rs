//! Two interleaving half circles ("moons"), scikit-learn's `make_moons` as unbounded exact
//! draws, each row labelled with its moon.
//!
//! # Formula
//! No MATH.md section: the law is defined here. Row i of a split reads its own draws of the
//! kernel's noise source: the label c = 0 if the uniform u₀ < ½ else 1, the angle t = π u₁,
//! and with z the row's two standard normals (draws 0 and 1)
//! - c = 0 (upper moon): x = (cos t, sin t) + noise · z,
//! - c = 1 (lower moon): x = (1 − cos t, ½ − sin t) + noise · z.
//!
//! The moments are exact (E cos t = 0, E sin t = 2/π, E cos² t = E sin² t = ½,
//! E sin t cos t = 0 for t uniform on [0, π], averaged over the two moons):
//! mean (½, ¼), Var x₁ = ¾ + noise², Var x₂ = 9/16 − 1/π + noise², Cov = ⅛ − 1/π.
//!
//! # Parameters
//! - `noise`: the standard deviation of the isotropic Gaussian noise added to each point,
//!   finite and ≥ 0. Default 0.05.
//!
//! # Claims
//! Rows of shape `[2]` with labels 0 and 1, unbounded, finite; row i the same for any batch
//! split, shard or rerun; the mean and covariance of 20,000 rows within 4 standard errors of
//! the exact moments above; with noise 0 every row lies on its labelled half circle and in
//! the declared range [−1, 2] (with noise > 0 there is no range).
//!
//! # References
//! Pedregosa et al., "Scikit-learn: Machine Learning in Python", JMLR 12, 2011
//! (`sklearn.datasets.make_moons`, whose outer and inner circles are the two moons here).

use std::f64::consts::{FRAC_1_PI, PI};

use sdeflow_kernel::{
    DataSource, Error, Result,
    data::{Extent, Moments, RowRef},
    register_data,
};
use serde::{Deserialize, Serialize};

/// The moons' noise level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The standard deviation of the Gaussian noise added to each point.
    pub noise: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self { noise: 0.05 }
    }
}

/// The two-moons law: a half circle per class plus isotropic Gaussian noise.
#[derive(Debug, Clone, Copy)]
pub struct Moons {
    noise: f64,
}

impl Moons {
    /// The moons `p` names; an error if `noise` is negative or not finite.
    pub fn new(p: Params) -> Result<Self> {
        if !(p.noise.is_finite() && p.noise >= 0.0) {
            return Err(Error::invalid(
                "moons",
                "noise",
                format!("must be finite and ≥ 0, got {}", p.noise),
            ));
        }
        Ok(Self { noise: p.noise })
    }
}

impl DataSource for Moons {
    fn sample_shape(&self) -> Vec<usize> {
        vec![2]
    }

    fn extent(&self) -> Extent {
        Extent::Unbounded
    }

    fn classes(&self) -> Option<usize> {
        Some(2)
    }

    fn range(&self) -> Option<(f64, f64)> {
        // x₁ ∈ [−1, 1] ∪ [0, 2], x₂ ∈ [0, 1] ∪ [−½, ½]; Gaussian noise has no bounds.
        (self.noise == 0.0).then_some((-1.0, 2.0))
    }

    fn moments(&self) -> Option<Moments> {
        let s2 = self.noise * self.noise;
        let cov = 0.125 - FRAC_1_PI;
        Some(Moments {
            mean: vec![0.5, 0.25],
            covariance: vec![vec![0.75 + s2, cov], vec![cov, 0.5625 - FRAC_1_PI + s2]],
        })
    }

    fn row(&self, at: RowRef<'_>, out: &mut [f64]) -> Result<Option<u32>> {
        let noise = match at {
            RowRef::Draw(noise) => noise,
            RowRef::Stored(j) => {
                return Err(Error::Msg(format!(
                    "moons has no stored rows (asked for row {j})"
                )));
            }
        };
        let label = u32::from(noise.uniform(0) >= 0.5);
        let (sin, cos) = (PI * noise.uniform(1)).sin_cos();
        let (x, y) = if label == 0 {
            (cos, sin)
        } else {
            (1.0 - cos, 0.5 - sin)
        };
        out[0] = x;
        out[1] = y;
        if self.noise > 0.0 {
            let mut z = [0.0; 2];
            noise.normals(0, &mut z);
            out[0] += self.noise * z[0];
            out[1] += self.noise * z[1];
        }
        Ok(Some(label))
    }
}

register_data!(
    "moons",
    "two interleaving half circles with Gaussian noise (scikit-learn's make_moons), labelled",
    Params,
    Moons::new,
);
