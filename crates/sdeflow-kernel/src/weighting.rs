//! The [`Weighting`] trait: the time weighting of the denoising loss (MATH.md §4).

use std::fmt::Debug;

use crate::TimeCoefs;

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

    /// The density p(t) the weighting samples t from, if it has its own (the loss then uses
    /// w/p(t)); `None` means uniform on [t_ε, T].
    fn t_density(&self, _c: &TimeCoefs) -> Option<f64> {
        None
    }
}
