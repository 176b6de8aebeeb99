//! The [`Weighting`] trait: the time weighting of the denoising loss (MATH.md §4).

use std::fmt::Debug;

use crate::{ForwardSde, TimeCoefs};

/// A weight w(t) on ‖ε̂ − ε‖², convertible to any target space through
/// [`Parameterization::eps_loss_scale`](crate::Parameterization::eps_loss_scale).
pub trait Weighting: Send + Sync + Debug {
    /// w_ε(t), the weight on ‖ε̂ − ε‖².
    fn eps_weight(&self, c: &TimeCoefs) -> f64;

    /// The weight on ‖out − target‖² for a parameterization whose loss scale is `k`
    /// (‖out − target‖ = k ‖ε̂ − ε‖): w_ε / k², so every target gives the same loss.
    fn target_weight(&self, c: &TimeCoefs, k: f64) -> f64 {
        self.eps_weight(c) / (k * k)
    }

    /// The density p(t) on [t_ε, T] the weighting samples t from, if it has its own (the
    /// loss then uses w/p(t)); `None` means uniform on [t_ε, T].
    fn t_density(&self, _sde: &dyn ForwardSde, _c: &TimeCoefs) -> Option<f64> {
        None
    }

    /// The t with CDF `u` ∈ (0, 1) under [`t_density`](Self::t_density) (inverse-CDF sampling);
    /// `None` when the density is uniform.
    fn sample_t(&self, _sde: &dyn ForwardSde, _u: f64) -> Option<f64> {
        None
    }

    /// The factor a sample t drawn from this weighting's density carries in a Monte Carlo
    /// estimate of the time-averaged loss (1/(T − t_ε)) ∫ w(t) L(t) dt: w(t) / (p(t) (T − t_ε)),
    /// or w(t) when t is uniform.
    fn loss_factor(&self, sde: &dyn ForwardSde, c: &TimeCoefs) -> f64 {
        match self.t_density(sde, c) {
            Some(p) => self.eps_weight(c) / (p * (sde.t_max() - sde.t_eps())),
            None => self.eps_weight(c),
        }
    }
}
