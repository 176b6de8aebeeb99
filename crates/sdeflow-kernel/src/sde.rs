//! The [`ForwardSde`] trait: a linear forward SDE and its Gaussian marginals (MATH.md §1).

use std::fmt::Debug;

use candle_core::{DType, Tensor};

use crate::{Result, TimeCoefs, grid::GridKind};

/// A linear forward SDE `dx = f(t) x dt + g(t) dw` with marginals `x_t | x₀ ~ N(α x₀, σ² I)`.
///
/// Time is scalar f64. Implementations give α, σ, f and g²; they must satisfy
/// `f = d log α/dt` and `g² = dσ²/dt − 2 f σ²`, which conformance checks numerically.
pub trait ForwardSde: Send + Sync + Debug {
    /// The end time T (the prior).
    fn t_max(&self) -> f64;
    /// The time sampling stops at, t_ε.
    fn t_eps(&self) -> f64;
    /// The signal scale α(t).
    fn alpha(&self, t: f64) -> f64;
    /// The noise scale σ(t).
    fn sigma(&self, t: f64) -> f64;
    /// The drift coefficient f(t).
    fn drift_coef(&self, t: f64) -> f64;
    /// The squared diffusion g(t)².
    fn diffusion_sq(&self, t: f64) -> f64;
    /// The scale s of the prior N(0, s² I).
    fn prior_std(&self) -> f64;
    /// Times where f or g² jump (a piecewise schedule's knots); the SDE identities are checked
    /// between them.
    fn knots(&self) -> Vec<f64> {
        Vec::new()
    }

    /// The grid this SDE samples on by default.
    fn default_grid(&self) -> GridKind {
        GridKind::Uniform
    }

    /// The half log-SNR λ(t) = log(α/σ). Override where a closed form is more accurate.
    fn log_snr(&self, t: f64) -> f64 {
        (self.alpha(t) / self.sigma(t)).ln()
    }

    /// The inverse of [`log_snr`](Self::log_snr) on [t_ε, T]; the default bisects (λ falls in t).
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        let (mut lo, mut hi) = (self.t_eps(), self.t_max());
        if lambda >= self.log_snr(lo) {
            return lo;
        }
        if lambda <= self.log_snr(hi) {
            return hi;
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if self.log_snr(mid) > lambda {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    /// All coefficients at `t`, computed once and handed around.
    fn coefs(&self, t: f64) -> TimeCoefs {
        TimeCoefs {
            t,
            alpha: self.alpha(t),
            sigma: self.sigma(t),
            f: self.drift_coef(t),
            g2: self.diffusion_sq(t),
            lambda: self.log_snr(t),
        }
    }

    /// A prior sample from standard normal draws `z` (noise always comes from the kernel).
    fn prior_sample(&self, z: &Tensor) -> Result<Tensor> {
        Ok(z.affine(self.prior_std(), 0.0)?)
    }

    /// The prior log-density of each row of `x` (shape `[n, ...]`), as an f64 tensor `[n]`.
    fn prior_log_prob(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.prior_std();
        let n = x.dim(0)?;
        let x = x.to_dtype(DType::F64)?.reshape((n, ()))?;
        let d = x.dim(1)? as f64;
        let sq = x.sqr()?.sum(1)?;
        let c = -0.5 * d * (2.0 * std::f64::consts::PI * s * s).ln();
        Ok(sq.affine(-0.5 / (s * s), c)?)
    }
}
