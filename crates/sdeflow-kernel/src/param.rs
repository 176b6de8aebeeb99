//! The [`Parameterization`] trait and the conversions between ε̂, x̂₀ and ŝ (MATH.md §3),
//! written once here so that every solver works with every SDE and every parameterization.

use std::fmt::Debug;

use candle_core::Tensor;

use crate::{Result, TimeCoefs, ops::lin2};

/// What a network predicts, its training target, and the exact conversions of its output.
///
/// A plugin gives the target, the map to ε̂ and its inverse; x̂₀ and ŝ follow from ε̂ through
/// [`convert`] unless the plugin overrides them (the flow velocity must, at α = 0).
pub trait Parameterization: Send + Sync + Debug {
    /// The regression target for `x_t = α x₀ + σ ε`.
    fn target(&self, x0: &Tensor, eps: &Tensor, c: &TimeCoefs) -> Result<Tensor>;

    /// ε̂ from the network output `out` at `(x, c)`.
    fn to_eps(&self, out: &Tensor, x: &Tensor, c: &TimeCoefs) -> Result<Tensor>;

    /// The network output that corresponds to ε̂ at `(x, c)`; the inverse of
    /// [`to_eps`](Self::to_eps). Used to report an exact score in this target.
    #[allow(
        clippy::wrong_self_convention,
        reason = "the inverse of `to_eps`; renaming would break every parameterization plugin"
    )]
    fn from_eps(&self, eps: &Tensor, x: &Tensor, c: &TimeCoefs) -> Result<Tensor>;

    /// The factor k(t) with ‖out − target‖ = k ‖ε̂ − ε‖ (MATH.md §4), so that the weight w on
    /// ‖ε̂ − ε‖² becomes w / k² in this target's space.
    fn eps_loss_scale(&self, c: &TimeCoefs) -> f64;

    /// x̂₀ from the network output.
    fn to_x0(&self, out: &Tensor, x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        convert::x0_from_eps(x, &self.to_eps(out, x, c)?, c)
    }

    /// ŝ from the network output.
    fn to_score(&self, out: &Tensor, x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        convert::score_from_eps(&self.to_eps(out, x, c)?, c)
    }
}

/// The exact conversions between ε̂, x̂₀ and ŝ given `x` and the time coefficients
/// (MATH.md §3, with `x = α x₀ + σ ε`).
pub mod convert {
    use super::*;

    /// x̂₀ = (x − σ ε̂)/α.
    pub fn x0_from_eps(x: &Tensor, eps: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        lin2(1.0 / c.alpha, x, -c.sigma / c.alpha, eps)
    }

    /// ε̂ = (x − α x̂₀)/σ.
    pub fn eps_from_x0(x: &Tensor, x0: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        lin2(1.0 / c.sigma, x, -c.alpha / c.sigma, x0)
    }

    /// ŝ = −ε̂/σ.
    pub fn score_from_eps(eps: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        Ok(eps.affine(-1.0 / c.sigma, 0.0)?)
    }

    /// ε̂ = −σ ŝ.
    pub fn eps_from_score(score: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        Ok(score.affine(-c.sigma, 0.0)?)
    }

    /// The noisy sample x_t = α x₀ + σ ε.
    pub fn noisy(x0: &Tensor, eps: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        lin2(c.alpha, x0, c.sigma, eps)
    }
}
