//! Likelihood weighting (Song, Durkan, Murray & Ermon 2021): the weighting under which the
//! denoising score-matching loss bounds the negative log-likelihood.
//!
//! # Formula
//! MATH.md §4: λ(t) = g(t)² on the score loss ‖ŝ − s‖² = ‖ε̂ − ε‖²/σ², so the weight on
//! ‖ε̂ − ε‖² is w_ε(t) = g²/σ² (= −2 dλ/dt, λ the half log-SNR, by MATH.md §1). In another
//! target's space the weight is w_ε/k(t)², k the parameterization's loss scale. Times are drawn
//! uniformly on [t_ε, T].
//!
//! # Parameters
//! None: `likelihood()`.
//!
//! # Claims
//! Finite and positive on [t_ε, T] of every SDE (σ > 0 and g² > 0 there); equal losses in
//! every parameterization; with the score target (k = 1/σ) the weight on ‖ŝ − s‖² is g².
//!
//! # References
//! Song, Durkan, Murray & Ermon, "Maximum Likelihood Training of Score-Based Diffusion
//! Models", NeurIPS 2021, Theorem 1 (λ(t) = g(t)²).

use sdeflow_kernel::{TimeCoefs, Weighting, register_weighting};
use serde::{Deserialize, Serialize};

/// The likelihood weighting has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// w_ε = g²/σ².
#[derive(Debug, Clone, Copy, Default)]
pub struct Likelihood;

impl Weighting for Likelihood {
    fn eps_weight(&self, c: &TimeCoefs) -> f64 {
        c.g2 / (c.sigma * c.sigma)
    }
}

register_weighting!(
    "likelihood",
    "likelihood weighting (Song et al. 2021): w = g²/σ² on ‖ε̂ − ε‖²",
    Params,
    |_: Params| Ok(Likelihood)
);
