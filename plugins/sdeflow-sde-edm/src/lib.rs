//! The EDM SDE (Karras et al. 2022): no scaling, and time is the noise level itself.
//!
//! # Formula
//! MATH.md §1 (the "edm" row): `dx = √(2t) dw`, so α = 1, σ = t, f = 0, g² = dσ²/dt = 2t.
//! λ = log(α/σ) = −ln t, and its inverse t = e^{−λ}; the VE-equivalent noise level
//! σ̃ = σ/α = t, so MATH.md §5's Karras grid on this SDE is EDM's own σ schedule.
//! The prior is N(0, T² I) (`prior_std` = T). The default grid is Karras with exponent ρ
//! (MATH.md §5); training should use EDM's log-normal density over σ, never uniform t.
//!
//! # Parameters
//! - `t_max`: the end time T = σ_max, default 80 (in EDM's units, data std 0.5).
//! - `t_eps`: where sampling stops, σ_min, default 0.002.
//! - `rho`: the exponent ρ of the default Karras grid, default 7.
//!
//! # Claims
//! f = d log α/dt and g² = dσ²/dt − 2 f σ² (exact: both sides are polynomials in t); σ and
//! the SNR monotone, α constant; t(λ(t)) = t; the prior's KL per dimension against the
//! marginal of data N(1, 1) at T = 80 is ½ (2/T² − ln(1 + 1/T²)) = 7.81e-5.
//!
//! # References
//! Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative
//! Models", NeurIPS 2022, Table 1 (σ(t) = t, s(t) = 1), eq. (5) (the ρ grid) and Table 5
//! (σ_min = 0.002, σ_max = 80, ρ = 7).

use sdeflow_kernel::{Error, ForwardSde, GridKind, Result, register_sde};
use serde::{Deserialize, Serialize};

/// The EDM SDE's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The end time T (= σ_max).
    pub t_max: f64,
    /// Where sampling stops, t_ε (= σ_min).
    pub t_eps: f64,
    /// The exponent ρ of the default Karras grid.
    pub rho: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            t_max: 80.0,
            t_eps: 0.002,
            rho: 7.0,
        }
    }
}

/// The EDM SDE.
#[derive(Debug, Clone, Copy)]
pub struct Edm {
    p: Params,
}

impl Edm {
    /// Checks the parameters: 0 < t_ε < T < ∞, 0 < ρ < ∞.
    pub fn new(p: Params) -> Result<Self> {
        let bad = |field: &str, reason: String| Err(Error::invalid("edm", field, reason));
        if !(p.t_max > 0.0 && p.t_max.is_finite()) {
            return bad(
                "t_max",
                format!("must be finite and positive, got {}", p.t_max),
            );
        }
        if !(p.t_eps > 0.0 && p.t_eps < p.t_max) {
            return bad(
                "t_eps",
                format!("must lie in (0, t_max = {}), got {}", p.t_max, p.t_eps),
            );
        }
        if !(p.rho > 0.0 && p.rho.is_finite()) {
            return bad("rho", format!("must be finite and positive, got {}", p.rho));
        }
        Ok(Self { p })
    }
}

impl ForwardSde for Edm {
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
        t
    }
    fn drift_coef(&self, _t: f64) -> f64 {
        0.0
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        2.0 * t
    }
    fn prior_std(&self) -> f64 {
        self.p.t_max
    }
    fn default_grid(&self) -> GridKind {
        GridKind::Karras { rho: self.p.rho }
    }
    fn log_snr(&self, t: f64) -> f64 {
        -t.ln()
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        (-lambda).exp()
    }
}

register_sde!(
    "edm",
    "EDM SDE (Karras et al. 2022): α = 1, σ = t, prior N(0, T² I), Karras grid",
    Params,
    Edm::new
);
