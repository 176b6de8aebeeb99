//! DDPM's "simple" weighting: every time weighs the same on the ε error.
//!
//! # Formula
//! MATH.md §4: w_ε(t) = 1 on ‖ε̂ − ε‖², which is denoising score matching with λ(t) = σ(t)².
//! In another target's space the weight is 1/k(t)², k the parameterization's loss scale.
//! Times are drawn uniformly on [t_ε, T].
//!
//! # Parameters
//! None: `simple()`.
//!
//! # Claims
//! Finite and positive on [t_ε, T]; equal losses in every parameterization.
//!
//! # References
//! Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020, eq. (14).

use sdeflow_kernel::{TimeCoefs, Weighting, register_weighting};
use serde::{Deserialize, Serialize};

/// The simple weighting has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// w_ε = 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct Simple;

impl Weighting for Simple {
    fn eps_weight(&self, _c: &TimeCoefs) -> f64 {
        1.0
    }
}

register_weighting!(
    "simple",
    "DDPM's simple loss: w = 1 on ‖ε̂ − ε‖²",
    Params,
    |_: Params| Ok(Simple)
);
