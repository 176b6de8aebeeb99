//! Flow velocity: the network predicts u = α′ x₀ + σ′ ε (rectified flow / flow matching),
//! which is exactly the probability-flow ODE drift of the SDE in use.
//!
//! # Formula
//! MATH.md §3 ("flow velocity"), with x = α x₀ + σ ε, α′ = f α and σ′ = (g² + 2 f σ²)/(2σ)
//! (the kernel's `TimeCoefs::d_alpha` and `d_sigma`), and k = σ′ − f σ = g²/(2σ):
//! - target u = α′ x₀ + σ′ ε;
//! - from ε̂: x̂₀ = (x − σ ε̂)/α gives û = f x + (σ′ − f σ) ε̂ = f x + k ε̂, which never divides
//!   by α. With ŝ = −ε̂/σ this is û = f x − ½ g² ŝ = F, the PF-ODE drift (MATH.md §2, §3);
//! - to ε̂: with D = α σ′ − σ α′ = α g²/(2σ) = α k, ε̂ = (α û − α′ x)/D = (û − f x)/k (α
//!   cancels); x̂₀ = (σ′ x − σ û)/D, read from û directly rather than through ε̂;
//!   ŝ = −ε̂/σ derived by the kernel;
//! - at α = 0 (|α| ≤ ε_mach σ, where x/σ equals ε to within α|x₀|/σ): ε̂ = x/σ and
//!   x̂₀ = (û − σ′ ε̂)/α′. That x̂₀ is finite only where the coefficients give a finite α′ = f α
//!   ≠ 0; at an SDE's own α = 0 (linear_flow at t = 1) f α is 0·∞ and x̂₀ is NaN, which the
//!   kernel's finiteness check reports.
//!
//! At a fixed x, û − u = k (ε̂ − ε), so the loss scale is k(t) = g²/(2σ) (MATH.md §4).
//!
//! The plugin states these as coefficient pairs (MATH.md §9: ε̂ and x̂₀ as a·out + b·x, the
//! target as c·x₀ + d·ε); the kernel applies them per call or per row, and derives ŝ, the
//! inverse map and the loss scale k = 1/|a| from the ε̂ pair (the flow states k itself, which stays
//! finite where a = 0).
//!
//! # Parameters
//! None: `flow()`.
//!
//! # Claims
//! Round trips û → ε̂ → û and through x̂₀ and ŝ are exact to 1e-10 (norm-relative, f64) on VP,
//! VE, EDM and linear-flow coefficients (α² + σ² ≠ 1 allowed); û = f x − ½ g² ŝ(û) (the PF-ODE
//! drift) to the same bar; ε̂ = x/σ at α = 0; the training target equals the output converted
//! from the true ε.
//!
//! # References
//! Lipman, Chen, Ben-Hamu, Nickel & Le, "Flow Matching for Generative Modeling", ICLR 2023,
//! Theorem 3 (u_t for Gaussian paths); Liu, Gong & Liu, "Flow Straight and Fast:
//! Learning to Generate and Transfer Data with Rectified Flow", ICLR 2023; Song et al., ICLR
//! 2021, eq. (13) (the probability-flow ODE).

use sdeflow_kernel::{Lin, Parameterization, TargetLin, TimeCoefs, register_param};
use serde::{Deserialize, Serialize};

/// The flow velocity has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// Flow-velocity prediction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flow;

/// Whether α vanishes next to σ: then x/σ is ε to rounding (the error is α|x₀|/σ).
fn alpha_vanishes(c: &TimeCoefs) -> bool {
    c.alpha.abs() <= f64::EPSILON * c.sigma
}

/// k = g²/(2σ) = σ′ − f σ.
fn k(c: &TimeCoefs) -> f64 {
    0.5 * c.g2 / c.sigma
}

impl Parameterization for Flow {
    fn eps(&self, c: &TimeCoefs) -> Lin {
        if alpha_vanishes(c) {
            return Lin {
                out: 0.0,
                x: 1.0 / c.sigma,
            };
        }
        let k = k(c);
        Lin {
            out: 1.0 / k,
            x: -c.f / k,
        }
    }
    fn x0(&self, c: &TimeCoefs) -> Lin {
        let d_sigma = c.d_sigma();
        if alpha_vanishes(c) {
            // x̂₀ = (û − σ′ ε̂)/α′ with ε̂ = x/σ.
            let d_alpha = c.d_alpha();
            return Lin {
                out: 1.0 / d_alpha,
                x: -d_sigma / (d_alpha * c.sigma),
            };
        }
        let d = c.alpha * k(c);
        Lin {
            out: -c.sigma / d,
            x: d_sigma / d,
        }
    }
    fn target(&self, c: &TimeCoefs) -> TargetLin {
        TargetLin {
            x0: c.d_alpha(),
            eps: c.d_sigma(),
        }
    }
    fn eps_loss_scale(&self, c: &TimeCoefs) -> f64 {
        // Not 1/|a|: at α = 0 the output does not determine ε̂ (a = 0), but û − u = k (ε̂ − ε)
        // holds at every α ≠ 0 and k stays finite.
        k(c)
    }
}

register_param!(
    "flow",
    "flow velocity: the network predicts u = α′ x₀ + σ′ ε, the PF-ODE drift",
    Params,
    |_: Params| Ok(Flow)
);
