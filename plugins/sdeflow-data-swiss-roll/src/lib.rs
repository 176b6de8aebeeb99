//! The 2-D swiss roll: a spiral strip of points (t cos t, t sin t), as unbounded exact draws.
//!
//! # Formula
//! No MATH.md section: the law is defined here. Row i of a split reads its own draws of the
//! kernel's noise source: the angle t = 1.5π (1 + 2u) with u the row's uniform 0, so t is
//! uniform on [1.5π, 4.5π], and with z the row's two standard normals (draws 0 and 1)
//! x = (t cos t, t sin t) / scale + noise · z.
//! This is the (x, z) projection of scikit-learn's 3-D `make_swiss_roll` (whose second
//! coordinate, the roll's uniform height, is dropped), divided by `scale`.
//!
//! The moments are exact in closed form. With t uniform on [1.5π, 4.5π] (length 3π), where
//! sin t = −1, +1 and cos t = 0 at the two ends (so sin 2t = 0, cos 2t = −1 at both), the
//! antiderivatives ∫ t cos t = t sin t + cos t, ∫ t sin t = sin t − t cos t,
//! ∫ t² cos² t = t³/6 + ¼ (t² sin 2t + t cos 2t − ½ sin 2t) (∫ t² sin² t: t³/6 minus the same)
//! and ∫ t² sin t cos t = ¼ (t sin 2t − t² cos 2t + ½ cos 2t), divided by 3π, give for
//! v = (t cos t, t sin t): E v₁ = 2, E v₂ = 2/(3π), E v₁² = 4.875π² − ¼, E v₂² = 4.875π² + ¼,
//! E v₁v₂ = 1.5π. Then mean = E v / scale and Cov = (E v vᵀ − E v E vᵀ) / scale² + noise² I.
//!
//! # Parameters
//! - `scale`: what (t cos t, t sin t) is divided by, finite and > 0. Default 5.
//! - `noise`: the standard deviation of the isotropic Gaussian noise, finite and ≥ 0.
//!   Default 0.05 (as `moons`: with noise 0 the law lies on a curve and has no density, so
//!   neither a score nor a likelihood exists; scikit-learn's default is 0).
//!
//! # Claims
//! Rows of shape `[2]`, no labels, unbounded, finite; row i the same for any batch split, shard
//! or rerun; `moments()` the closed forms above (within 1e-10 relative of an independent
//! composite Simpson quadrature of the five integrals), and the mean and covariance of 20,000
//! rows within 4 standard errors of them; with noise 0 a row's radius times `scale` is its
//! angle parameter t in [1.5π, 4.5π] and every value lies in the declared range ±4.5π/scale
//! (with noise > 0 there is no range).
//!
//! # References
//! Pedregosa et al., "Scikit-learn: Machine Learning in Python", JMLR 12, 2011
//! (`sklearn.datasets.make_swiss_roll`).

use std::f64::consts::PI;

use sdeflow_kernel::{
    DataSource, Error, Result,
    data::{Extent, Moments, RowRef},
    register_data,
};
use serde::{Deserialize, Serialize};

/// The roll's scale and noise level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// What (t cos t, t sin t) is divided by.
    pub scale: f64,
    /// The standard deviation of the Gaussian noise added to each point.
    pub noise: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            scale: 5.0,
            noise: 0.05,
        }
    }
}

/// The first angle of the roll, 1.5π.
pub const T_MIN: f64 = 1.5 * PI;
/// The last angle of the roll, 4.5π.
pub const T_MAX: f64 = 4.5 * PI;

/// The 2-D swiss roll law.
#[derive(Debug, Clone, Copy)]
pub struct SwissRoll {
    p: Params,
}

impl SwissRoll {
    /// The roll `p` names; an error if `scale` is not finite and positive or `noise` is
    /// negative or not finite.
    pub fn new(p: Params) -> Result<Self> {
        if !(p.scale.is_finite() && p.scale > 0.0) {
            let reason = format!("must be finite and > 0, got {}", p.scale);
            return Err(Error::invalid("swiss_roll", "scale", reason));
        }
        if !(p.noise.is_finite() && p.noise >= 0.0) {
            let reason = format!("must be finite and ≥ 0, got {}", p.noise);
            return Err(Error::invalid("swiss_roll", "noise", reason));
        }
        Ok(Self { p })
    }

    /// The parameters.
    pub fn params(&self) -> Params {
        self.p
    }
}

impl DataSource for SwissRoll {
    fn sample_shape(&self) -> Vec<usize> {
        vec![2]
    }

    fn extent(&self) -> Extent {
        Extent::Unbounded
    }

    fn range(&self) -> Option<(f64, f64)> {
        // |t cos t|, |t sin t| ≤ t ≤ 4.5π; Gaussian noise has no bounds.
        let r = T_MAX / self.p.scale;
        (self.p.noise == 0.0).then_some((-r, r))
    }

    fn moments(&self) -> Option<Moments> {
        // E v and E v vᵀ for v = (t cos t, t sin t), in the closed forms of the crate doc.
        let (ex, ey) = (2.0, 2.0 / (3.0 * PI));
        let (exx, eyy, exy) = (4.875 * PI * PI - 0.25, 4.875 * PI * PI + 0.25, 1.5 * PI);
        let (s, s2) = (self.p.scale, self.p.noise * self.p.noise);
        let cov = (exy - ex * ey) / (s * s);
        Some(Moments {
            mean: vec![ex / s, ey / s],
            covariance: vec![
                vec![(exx - ex * ex) / (s * s) + s2, cov],
                vec![cov, (eyy - ey * ey) / (s * s) + s2],
            ],
        })
    }

    fn row(&self, at: RowRef<'_>, out: &mut [f64]) -> Result<Option<u32>> {
        let noise = match at {
            RowRef::Draw(noise) => noise,
            RowRef::Stored(j) => {
                return Err(Error::Msg(format!(
                    "swiss_roll has no stored rows (asked for row {j})"
                )));
            }
        };
        let t = T_MIN + (T_MAX - T_MIN) * noise.uniform(0);
        let (sin, cos) = t.sin_cos();
        out[0] = t * cos / self.p.scale;
        out[1] = t * sin / self.p.scale;
        if self.p.noise > 0.0 {
            let mut z = [0.0; 2];
            noise.normals(0, &mut z);
            out[0] += self.p.noise * z[0];
            out[1] += self.p.noise * z[1];
        }
        Ok(None)
    }
}

register_data!(
    "swiss_roll",
    "the 2-D swiss roll (t cos t, t sin t)/scale, t uniform on [1.5π, 4.5π], plus Gaussian noise",
    Params,
    SwissRoll::new,
);
