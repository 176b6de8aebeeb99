//! x₀-prediction: the network predicts the clean data x₀ in x_t = α x₀ + σ ε.
//!
//! # Formula
//! MATH.md §3, second row: the output is x̂₀; ε̂ = (x − α x̂₀)/σ, ŝ = −ε̂/σ = −(x − α x̂₀)/σ²,
//! and the inverse map from ε̂ is x̂₀ = (x − σ ε̂)/α, all derived by the kernel from the ε̂ pair. The
//! training target is x₀, and since x̂₀ − x₀ = −(σ/α)(ε̂ − ε) at a fixed x, the loss scale is
//! k(t) = σ/α = σ̃ (MATH.md §4: ‖x̂₀ − x₀‖² = (σ/α)² ‖ε̂ − ε‖²).
//!
//! The plugin states these as coefficient pairs (MATH.md §9: ε̂ and x̂₀ as a·out + b·x, the
//! target as c·x₀ + d·ε); the kernel applies them per call or per row, and derives ŝ, the
//! inverse map and the loss scale k = 1/|a| from the ε̂ pair.
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

use sdeflow_kernel::{Lin, Parameterization, TargetLin, TimeCoefs, register_param};
use serde::{Deserialize, Serialize};

/// x₀-prediction has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// x₀-prediction.
#[derive(Debug, Clone, Copy, Default)]
pub struct X0;

impl Parameterization for X0 {
    fn eps(&self, c: &TimeCoefs) -> Lin {
        Lin {
            out: -c.alpha / c.sigma,
            x: 1.0 / c.sigma,
        }
    }
    fn x0(&self, _c: &TimeCoefs) -> Lin {
        Lin { out: 1.0, x: 0.0 }
    }
    fn target(&self, _c: &TimeCoefs) -> TargetLin {
        TargetLin { x0: 1.0, eps: 0.0 }
    }
}

register_param!(
    "x0",
    "x₀-prediction: the network predicts the clean data",
    Params,
    |_: Params| Ok(X0)
);
