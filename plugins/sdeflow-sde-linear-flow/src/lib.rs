//! The linear-interpolation SDE of rectified flow and flow matching: x_t = (1 − t) x₀ + t ε.
//!
//! # Formula
//! MATH.md §1 (the "linear_flow" row): α = 1 − t, σ = t, f = d log α/dt = −1/(1 − t),
//! g² = dσ²/dt − 2 f σ² = 2t + 2t²/(1 − t) = 2t/(1 − t).
//! λ = log(α/σ) = ln_1p(−t) − ln t, and its inverse t = 1/(1 + e^{λ}), evaluated as
//! e^{−λ}/(1 + e^{−λ}) for λ > 0 so that neither sign overflows. σ̃ = σ/α = t/(1 − t).
//! f and g² blow up at t = 1, so T = 1 − 1e-3. The prior is N(0, I), not the marginal at T:
//! for data N(1, 1) the marginal there is N(α, α² + σ²) with α = 1e-3, σ = 0.999, and
//! KL(N(α, α² + σ²) ‖ N(0, 1)) = ½ ((α² + σ² + α²) − 1 − ln(α² + σ²)) = 1.4993e-6 per
//! dimension (≈ 3α²/2, since α² + σ² = 1 − 2α + 2α²). The default grid is uniform in t.
//!
//! # Parameters
//! - `t_max`: the end time T, default 1 − 1e-3 (must be < 1).
//! - `t_eps`: where sampling stops, default 1e-3.
//!
//! # Claims
//! f = d log α/dt and g² = dσ²/dt − 2 f σ² (checked by central differences); α falls, σ and
//! λ monotone; t(λ(t)) = t; the prior's KL per dimension at T for data N(1, 1) is 1.5e-6.
//! The PF-ODE drift F = f x − ½ g² s is the flow velocity u = ε − x₀ (MATH.md §3).
//!
//! # References
//! Liu, Gong & Liu, "Flow Straight and Fast: Learning to Generate and Transfer Data with
//! Rectified Flow", ICLR 2023, §2 (X_t = t X₁ + (1 − t) X₀); Lipman, Chen, Ben-Hamu, Nickel &
//! Le, "Flow Matching for Generative Modeling", ICLR 2023, §4.1 Example II with σ_min = 0
//! (with t reversed: data at t = 0 here).

use sdeflow_kernel::{Error, ForwardSde, Result, register_sde};
use serde::{Deserialize, Serialize};

/// The linear-flow SDE's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The end time T (below 1).
    pub t_max: f64,
    /// Where sampling stops, t_ε.
    pub t_eps: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            t_max: 1.0 - 1e-3,
            t_eps: 1e-3,
        }
    }
}

/// The linear-flow SDE.
#[derive(Debug, Clone, Copy)]
pub struct LinearFlow {
    p: Params,
}

impl LinearFlow {
    /// Checks the parameters: 0 < t_ε < T < 1.
    pub fn new(p: Params) -> Result<Self> {
        let bad = |field: &str, reason: String| Err(Error::invalid("linear_flow", field, reason));
        if !(p.t_max > 0.0 && p.t_max < 1.0) {
            return bad(
                "t_max",
                format!(
                    "must lie in (0, 1) (f and g² are infinite at 1), got {}",
                    p.t_max
                ),
            );
        }
        if !(p.t_eps > 0.0 && p.t_eps < p.t_max) {
            return bad(
                "t_eps",
                format!("must lie in (0, t_max = {}), got {}", p.t_max, p.t_eps),
            );
        }
        Ok(Self { p })
    }
}

impl ForwardSde for LinearFlow {
    fn t_max(&self) -> f64 {
        self.p.t_max
    }
    fn t_eps(&self) -> f64 {
        self.p.t_eps
    }
    fn alpha(&self, t: f64) -> f64 {
        1.0 - t
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn drift_coef(&self, t: f64) -> f64 {
        -1.0 / (1.0 - t)
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        2.0 * t / (1.0 - t)
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
    fn log_snr(&self, t: f64) -> f64 {
        (-t).ln_1p() - t.ln()
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        if lambda > 0.0 {
            let e = (-lambda).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + lambda.exp())
        }
    }
}

register_sde!(
    "linear_flow",
    "linear-interpolation SDE (rectified flow, flow matching): α = 1 − t, σ = t",
    Params,
    LinearFlow::new
);
