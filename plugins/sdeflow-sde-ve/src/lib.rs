//! The variance-exploding SDE (VE; Song et al. 2021), the continuous limit of SMLD/NCSN.
//!
//! # Formula
//! MATH.md §1, with the geometric noise scale s(t) = s_min (s_max/s_min)^t and L = ln(s_max/s_min):
//! `dx = √(d s²/dt) dw = s(t) √(2L) dw`, so f = 0, g² = 2 L s(t)², α = 1 and
//! σ² = ∫₀ᵗ g² = s(t)² − s_min² = s_min² expm1(2 L t) (expm1 keeps σ exact at small t), so
//! σ(0) = 0. λ = log(α/σ) = −log σ; its closed-form inverse (MATH.md §5) is
//! t = ln(√(σ̃² + s_min²)/s_min)/L = softplus(2 ln(σ̃/s_min))/(2L), σ̃ = e^{−λ}.
//! The prior is N(0, s_max² I).
//!
//! The marginal convention: score_sde (`VESDE.marginal_prob`) takes σ = s(t), which has
//! σ(0) = s_min, not 0. Its coefficients satisfy g² = dσ²/dt, but that σ is not the law of
//! the SDE started at a data point: the SDE from x₀ has variance ∫₀ᵗ g² = s(t)² − s_min², so
//! s(t)² overstates it by s_min² at every t, and "the data" at t = 0 would be data + N(0, s_min²).
//! With the square-root convention the marginal, the SDE and x(0) = x₀ agree exactly; the
//! difference is s_min²/σ² relative, large only near t = 0 (σ(t_ε = 1e-5) ≈ 1.3e-4, where
//! score_sde's would be 0.01). A network trained by score_sde is conditioned on s(t) =
//! √(σ² + s_min²): feed it that, not σ.
//!
//! # Parameters
//! - `sigma_min`: s_min, the noise scale at t = 0 in s(t), default 0.01.
//! - `sigma_max`: s_max = s(1), also the prior's scale, default 50.
//! - `t_max`: the end time T, default 1.
//! - `t_eps`: where sampling stops, default 1e-5.
//!
//! # Claims
//! f = d log α/dt and g² = dσ²/dt − 2 f σ² (checked by central differences); α constant, σ
//! rising and λ falling strictly; t(λ(t)) = t; the prior matches the marginal at T = 1 for data
//! N(1, 1) with KL per dimension ≈ 2e-4 (the data's own scale, 1, against s_max = 50). The
//! default grid is uniform in t: geometric in s(t), SMLD's noise levels (and in σ away from 0).
//!
//! # References
//! Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole, "Score-Based Generative Modeling
//! through Stochastic Differential Equations", ICLR 2021, eq. (9) and Appendices B–C; Song &
//! Ermon, "Generative Modeling by Estimating Gradients of the Data Distribution", NeurIPS 2019.

use sdeflow_kernel::{Error, ForwardSde, Result, grid::GridKind, register_sde};
use serde::{Deserialize, Serialize};

/// The VE SDE's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// s_min, the noise scale s(0).
    pub sigma_min: f64,
    /// s_max = s(1), the prior's scale.
    pub sigma_max: f64,
    /// The end time T.
    pub t_max: f64,
    /// Where sampling stops, t_ε.
    pub t_eps: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            sigma_min: 0.01,
            sigma_max: 50.0,
            t_max: 1.0,
            t_eps: 1e-5,
        }
    }
}

/// The VE SDE.
#[derive(Debug, Clone, Copy)]
pub struct Ve {
    p: Params,
    /// L = ln(s_max/s_min).
    log_ratio: f64,
}

impl Ve {
    /// Checks the parameters: 0 < s_min < s_max, 0 < t_ε < T.
    pub fn new(p: Params) -> Result<Self> {
        let bad = |field: &str, reason: String| Err(Error::invalid("ve", field, reason));
        if !(p.sigma_min > 0.0 && p.sigma_min.is_finite()) {
            return bad(
                "sigma_min",
                format!("must be finite and positive, got {}", p.sigma_min),
            );
        }
        if !(p.sigma_max > p.sigma_min && p.sigma_max.is_finite()) {
            return bad(
                "sigma_max",
                format!(
                    "must exceed sigma_min = {}, got {}",
                    p.sigma_min, p.sigma_max
                ),
            );
        }
        if !(p.t_max > 0.0 && p.t_max.is_finite()) {
            return bad("t_max", format!("must be positive, got {}", p.t_max));
        }
        if !(p.t_eps > 0.0 && p.t_eps < p.t_max) {
            return bad(
                "t_eps",
                format!("must lie in (0, t_max = {}), got {}", p.t_max, p.t_eps),
            );
        }
        let log_ratio = (p.sigma_max / p.sigma_min).ln();
        Ok(Self { p, log_ratio })
    }

    /// s(t)² = s_min² e^{2Lt}.
    fn s_sq(&self, t: f64) -> f64 {
        self.p.sigma_min.powi(2) * (2.0 * self.log_ratio * t).exp()
    }
}

impl ForwardSde for Ve {
    fn t_max(&self) -> f64 {
        self.p.t_max
    }
    fn t_eps(&self) -> f64 {
        self.p.t_eps
    }
    fn alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        self.p.sigma_min * (2.0 * self.log_ratio * t).exp_m1().sqrt()
    }
    fn drift_coef(&self, _t: f64) -> f64 {
        0.0
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        2.0 * self.log_ratio * self.s_sq(t)
    }
    fn prior_std(&self) -> f64 {
        self.p.sigma_max
    }
    fn default_grid(&self) -> GridKind {
        GridKind::Uniform
    }
    fn log_snr(&self, t: f64) -> f64 {
        -self.p.sigma_min.ln() - 0.5 * (2.0 * self.log_ratio * t).exp_m1().ln()
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        // 2L t = ln(1 + e^x), x = 2 ln(σ̃/s_min) = −2 (λ + ln s_min), by a softplus that
        // neither overflows (x large) nor loses digits (x very negative).
        let x = -2.0 * (lambda + self.p.sigma_min.ln());
        let softplus = sdeflow_kernel::schedule::softplus(x);
        softplus / (2.0 * self.log_ratio)
    }
}

register_sde!(
    "ve",
    "variance-exploding SDE (Song et al. 2021): α = 1, σ² = s(t)² − s_min², s(t) = s_min (s_max/s_min)^t",
    Params,
    Ve::new
);
