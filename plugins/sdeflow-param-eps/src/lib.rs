//! ε-prediction: the network predicts the noise ε in x_t = α x₀ + σ ε (Ho et al. 2020).
//!
//! # Formula
//! MATH.md §3, first row: the output is ε̂; x̂₀ = (x − σ ε̂)/α and ŝ = −ε̂/σ through the
//! kernel's conversions. The training target is ε and ‖ε̂ − ε‖ is the loss itself, so the loss
//! scale k(t) = 1 (MATH.md §4).
//!
//! The plugin states these as coefficient pairs (MATH.md §9: ε̂ and x̂₀ as a·out + b·x, the
//! target as c·x₀ + d·ε); the kernel applies them per call or per row, and derives ŝ, the
//! inverse map and the loss scale k = 1/|a| from the ε̂ pair.
//!
//! # Parameters
//! None: `eps()`.
//!
//! # Claims
//! Round trips ε̂ → output → ε̂ and through x̂₀ and ŝ are exact to 1e-10 (norm-relative, f64);
//! the training target equals the output converted from the true ε.
//!
//! # References
//! Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020, eq. (11)–(14).

use sdeflow_kernel::{Lin, Parameterization, TargetLin, TimeCoefs, register_param};
use serde::{Deserialize, Serialize};

/// ε-prediction has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// ε-prediction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Eps;

impl Parameterization for Eps {
    fn eps(&self, _c: &TimeCoefs) -> Lin {
        Lin { out: 1.0, x: 0.0 }
    }
    fn target(&self, _c: &TimeCoefs) -> TargetLin {
        TargetLin { x0: 0.0, eps: 1.0 }
    }
}

register_param!(
    "eps",
    "ε-prediction: the network predicts the noise (DDPM)",
    Params,
    |_: Params| Ok(Eps)
);
