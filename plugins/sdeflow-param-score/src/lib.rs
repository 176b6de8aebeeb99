//! Score prediction: the network predicts ∇ₓ log p_t(x), as in Song et al. 2021's NCSN++.
//!
//! # Formula
//! MATH.md §3, third row: the output is ŝ; ε̂ = −σ ŝ, x̂₀ = (x + σ² ŝ)/α (through ε̂ and the
//! kernel's `convert`), and the inverse map from ε̂ is ŝ = −ε̂/σ. The training target is the
//! conditional score ∇ log p(x_t | x₀) = −ε/σ, and since ŝ − s = −(ε̂ − ε)/σ the loss scale is
//! k(t) = 1/σ (MATH.md §4: ‖ŝ − s‖² = ‖ε̂ − ε‖²/σ²).
//!
//! # Parameters
//! None: `score()`.
//!
//! # Claims
//! `to_score` returns the output unchanged; round trips ŝ → ε̂ → ŝ and through x̂₀ are exact
//! to 1e-10 (norm-relative, f64) away from α = 0 and σ = 0; the training target equals the
//! output converted from the true ε.
//!
//! # References
//! Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole, "Score-Based Generative Modeling
//! through Stochastic Differential Equations", ICLR 2021, eq. (7) (denoising score matching);
//! Vincent, "A Connection Between Score Matching and Denoising Autoencoders", 2011.

use candle_core::Tensor;
use sdeflow_kernel::{Parameterization, Result, TimeCoefs, convert, register_param};
use serde::{Deserialize, Serialize};

/// Score prediction has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// Score prediction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Score;

impl Parameterization for Score {
    fn target(&self, _x0: &Tensor, eps: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        convert::score_from_eps(eps, c)
    }
    fn to_eps(&self, out: &Tensor, _x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        convert::eps_from_score(out, c)
    }
    fn from_eps(&self, eps: &Tensor, _x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        convert::score_from_eps(eps, c)
    }
    fn eps_loss_scale(&self, c: &TimeCoefs) -> f64 {
        1.0 / c.sigma
    }
    fn to_score(&self, out: &Tensor, _x: &Tensor, _c: &TimeCoefs) -> Result<Tensor> {
        Ok(out.clone())
    }
}

register_param!(
    "score",
    "score prediction: the network predicts ∇ log p_t (NCSN)",
    Params,
    |_: Params| Ok(Score)
);
