//! v-prediction: the network predicts v = α ε − σ x₀ (Salimans & Ho 2022), for any (α, σ).
//!
//! # Formula
//! MATH.md §3, fourth row, with n = α² + σ² (n = 1 only on VP-type SDEs; nothing here assumes
//! it): from x = α x₀ + σ ε and v = α ε − σ x₀,
//! ε̂ = (σ x + α v̂)/n, x̂₀ = (α x − σ v̂)/n, ŝ = −ε̂/σ (derived by the kernel),
//! and the inverse map v̂ = α ε̂ − σ x̂₀(ε̂) = (n ε̂ − σ x)/α. The training target is α ε − σ x₀.
//! At a fixed x, v̂ − v = (α + σ²/α)(ε̂ − ε), so the loss scale is k(t) = n/α
//! (MATH.md §4: ‖v̂ − v‖² = ((α² + σ²)/α)² ‖ε̂ − ε‖²).
//!
//! The plugin states these as coefficient pairs (MATH.md §9: ε̂ and x̂₀ as a·out + b·x, the
//! target as c·x₀ + d·ε); the kernel applies them per call or per row, and derives ŝ, the
//! inverse map and the loss scale k = 1/|a| from the ε̂ pair.
//!
//! # Parameters
//! None: `v()`.
//!
//! # Claims
//! Round trips v̂ → ε̂ → v̂ and through x̂₀ and ŝ are exact to 1e-10 (norm-relative, f64) away
//! from α = 0 and σ = 0, on VP (n = 1) and on VE, EDM and flow coefficients (n ≠ 1); x̂₀ is
//! computed from v̂ directly (MATH.md's closed form), not through ε̂, so it stays accurate at
//! small α; the training target equals the output converted from the true ε.
//!
//! # References
//! Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR 2022,
//! §4 and Appendix D (v ≡ α_t ε − σ_t x, written there for α² + σ² = 1).

use sdeflow_kernel::{Lin, Parameterization, TargetLin, TimeCoefs, register_param};
use serde::{Deserialize, Serialize};

/// v-prediction has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// v-prediction.
#[derive(Debug, Clone, Copy, Default)]
pub struct V;

/// n = α² + σ².
fn norm_sq(c: &TimeCoefs) -> f64 {
    c.alpha * c.alpha + c.sigma * c.sigma
}

impl Parameterization for V {
    fn eps(&self, c: &TimeCoefs) -> Lin {
        let n = norm_sq(c);
        Lin {
            out: c.alpha / n,
            x: c.sigma / n,
        }
    }
    fn x0(&self, c: &TimeCoefs) -> Lin {
        let n = norm_sq(c);
        Lin {
            out: -c.sigma / n,
            x: c.alpha / n,
        }
    }
    fn target(&self, c: &TimeCoefs) -> TargetLin {
        TargetLin {
            x0: -c.sigma,
            eps: c.alpha,
        }
    }
}

register_param!(
    "v",
    "v-prediction (Salimans & Ho 2022): the network predicts v = α ε − σ x₀",
    Params,
    |_: Params| Ok(V)
);
