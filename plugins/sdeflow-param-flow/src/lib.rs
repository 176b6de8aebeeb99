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
//!   ŝ = −ε̂/σ through the kernel's `convert`;
//! - at α = 0 (|α| ≤ ε_mach σ, where x/σ equals ε to within α|x₀|/σ): ε̂ = x/σ and
//!   x̂₀ = (û − σ′ ε̂)/α′. That x̂₀ is finite only where the coefficients give a finite α′ = f α
//!   ≠ 0; at an SDE's own α = 0 (linear_flow at t = 1) f α is 0·∞ and x̂₀ is NaN, which the
//!   kernel's finiteness check reports.
//!
//! At a fixed x, û − u = k (ε̂ − ε), so the loss scale is k(t) = g²/(2σ) (MATH.md §4).
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

use candle_core::Tensor;
use sdeflow_kernel::{Parameterization, Result, TimeCoefs, ops::lin2, register_param};
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

impl Parameterization for Flow {
    fn target(&self, x0: &Tensor, eps: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        lin2(c.d_alpha(), x0, c.d_sigma(), eps)
    }
    fn to_eps(&self, out: &Tensor, x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        if alpha_vanishes(c) {
            return Ok(x.affine(1.0 / c.sigma, 0.0)?);
        }
        let k = self.eps_loss_scale(c);
        lin2(1.0 / k, out, -c.f / k, x)
    }
    fn from_eps(&self, eps: &Tensor, x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        let (f, half_g2) = c.ode_coefs();
        lin2(f, x, half_g2 / c.sigma, eps)
    }
    fn eps_loss_scale(&self, c: &TimeCoefs) -> f64 {
        0.5 * c.g2 / c.sigma
    }
    fn to_x0(&self, out: &Tensor, x: &Tensor, c: &TimeCoefs) -> Result<Tensor> {
        let d_sigma = c.d_sigma();
        if alpha_vanishes(c) {
            let (eps_hat, d_alpha) = (self.to_eps(out, x, c)?, c.d_alpha());
            return lin2(1.0 / d_alpha, out, -d_sigma / d_alpha, &eps_hat);
        }
        let d = c.alpha * self.eps_loss_scale(c);
        lin2(d_sigma / d, x, -c.sigma / d, out)
    }
}

register_param!(
    "flow",
    "flow velocity: the network predicts u = α′ x₀ + σ′ ε, the PF-ODE drift",
    Params,
    |_: Params| Ok(Flow)
);
