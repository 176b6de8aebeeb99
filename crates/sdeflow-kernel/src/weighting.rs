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

    /// The density p(t) on [t_ε, T] the loss draws t from, if the weighting has its own;
    /// `None` means uniform on [t_ε, T]. The density is part of the objective (MATH.md §9):
    /// the loss is E_{t~p}[w_ε(t) ‖ε̂ − ε‖²], with no division by p(t).
    fn t_density(&self, _sde: &dyn ForwardSde, _c: &TimeCoefs) -> Option<f64> {
        None
    }

    /// The t with CDF `u` ∈ (0, 1) under [`t_density`](Self::t_density) (inverse-CDF sampling);
    /// `None` when the density is uniform.
    fn sample_t(&self, _sde: &dyn ForwardSde, _u: f64) -> Option<f64> {
        None
    }
}
