//! x₀-prediction: the network predicts the clean data x₀ in x_t = α x₀ + σ ε.
//!
//! # Formula
//! MATH.md §3, second row: the output is x̂₀; ε̂ = (x − α x̂₀)/σ, ŝ = −ε̂/σ = −(x − α x̂₀)/σ²,
//! and the inverse map from ε̂ is x̂₀ = (x − σ ε̂)/α, all through the kernel's `convert`. The
//! training target is x₀, and since x̂₀ − x₀ = −(σ/α)(ε̂ − ε) at a fixed x, the loss scale is
//! k(t) = σ/α = σ̃ (MATH.md §4: ‖x̂₀ − x₀‖² = (σ/α)² ‖ε̂ − ε‖²).
//!
//! # Parameters
//! None: `x0()`.
//!
//! # Claims
//! `to_x0` returns the output unchanged; round trips x̂₀ → ε̂ → x̂₀ and through ŝ are exact to
//! 1e-10 (norm-relative, f64) away from α = 0 and σ = 0; the training target equals the output
//! converted from the true ε.
//!
//! # References
//! Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative
//! Models", NeurIPS 2022, eq. (2) (the denoiser D(x; σ) = x̂₀ regressed on the clean data);
//! Kingma, Salimans, Poole & Ho, "Variational Diffusion Models", NeurIPS 2021 (x̂_θ and the
//! SNR view of its loss).

use candle_core::Tensor;
use sdeflow_kernel::{Parameterization, Result, TimeCoefs, convert, register_param};
use serde::{Deserialize, Serialize};

/// x₀-prediction has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// x₀-prediction.
#[derive(Debug, Clone, Copy, Default)]
pub struct X0;

impl Parameterization for X0 {
    fn target(&self, x0: &Tensor, _eps: &Tensor, _c: &TimeCoefs) -> Result<Tensor> {
        Ok(x0.clone())
    }
    fn to_eps(&self, out: &Tensor, x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        convert::eps_from_x0(x, out, c)
    }
    fn from_eps(&self, eps: &Tensor, x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        convert::x0_from_eps(x, eps, c)
    }
    fn eps_loss_scale(&self, c: &TimeCoefs) -> f64 {
        c.sigma / c.alpha
    }
    fn to_x0(&self, out: &Tensor, _x: &Tensor, _c: &TimeCoefs) -> Result<Tensor> {
        Ok(out.clone())
    }
}

register_param!(
    "x0",
    "x₀-prediction: the network predicts the clean data",
    Params,
    |_: Params| Ok(X0)
);
