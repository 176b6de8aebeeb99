//! EDM's loss weighting and log-normal noise-level density (Karras et al. 2022), on any SDE
//! through its VE-equivalent noise level σ̃ = σ/α.
//!
//! # Formula
//! MATH.md §4. EDM weighs the denoiser's x₀ error by λ(σ̃) = (σ̃² + σ_d²)/(σ̃ σ_d)², and
//! ‖x̂₀ − x₀‖² = σ̃² ‖ε̂ − ε‖², so the weight on ‖ε̂ − ε‖² is w_ε(t) = (σ̃² + σ_d²)/σ_d².
//!
//! Times are not uniform: ln σ̃ ~ N(p_mean, p_std²), truncated to [σ̃(t_ε), σ̃(T)] of the SDE
//! in use and mapped to t with the Jacobian (MATH.md §1: g² = −2σ² dλ/dt, ln σ̃ = −λ):
//!
//! p(t) = φ(z(t))/p_std · |d ln σ̃/dt| / Z,  z(t) = (ln σ̃(t) − p_mean)/p_std,
//! d ln σ̃/dt = g²/(2σ²),  Z = Φ(z_max) − Φ(z_min),  z_min = z(t_ε), z_max = z(T),
//!
//! and 0 outside [t_ε, T]. Inverse-CDF sampling: z = Φ⁻¹(Φ(z_min) + u Z),
//! ln σ̃ = p_mean + p_std z, t = t(λ = −ln σ̃) by the SDE's `t_of_log_snr`. When both ends lie
//! in the upper tail (z_min > 0) the same is done with the survival function Φ(−z), so no
//! digit is lost to 1 − Φ. Φ and Φ⁻¹ come from `statrs`.
//!
//! The density is part of the objective, as in EDM: the kernel's loss draws t from it and
//! weighs ‖ε̂ − ε‖² by w_ε alone, E_{t~p}[w_ε ‖ε̂ − ε‖²] (MATH.md §9). (Dividing by p(t) would
//! make it a t-uniform loss with weights up to ~4e9 at σ̃ = 80: not EDM's.)
//!
//! # Parameters
//! - `sigma_data`: σ_d, the data's standard deviation, finite and > 0, default 0.5.
//! - `p_mean`: mean of ln σ̃, finite, default −1.2.
//! - `p_std`: standard deviation of ln σ̃, finite and > 0, default 1.2.
//!
//! # Claims
//! w_ε finite, positive and ≥ 1 on [t_ε, T] of every SDE; p(t) integrates to 1 on [t_ε, T]
//! (1e-6); the CDF of `sample_t(u)` is u (1e-6); on EDM's own SDE (α = 1, σ = t) p(t) is the
//! truncated log-normal density of t.
//!
//! # References
//! Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative
//! Models", NeurIPS 2022, Table 1 (λ(σ), P_mean = −1.2, P_std = 1.2, σ_data = 0.5) and §5.

use sdeflow_kernel::{Error, ForwardSde, Result, TimeCoefs, Weighting, register_weighting};
use serde::{Deserialize, Serialize};
use statrs::distribution::{Continuous, ContinuousCDF, Normal};

/// EDM's weighting parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// σ_d, the standard deviation of the data.
    pub sigma_data: f64,
    /// The mean of ln σ̃ under the training density.
    pub p_mean: f64,
    /// The standard deviation of ln σ̃ under the training density.
    pub p_std: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            sigma_data: 0.5,
            p_mean: -1.2,
            p_std: 1.2,
        }
    }
}

/// w_ε = (σ̃² + σ_d²)/σ_d², with t drawn from the truncated log-normal density of σ̃.
#[derive(Debug, Clone, Copy)]
pub struct Edm {
    p: Params,
}

impl Edm {
    /// Checks that σ_d and p_std are finite and positive and p_mean is finite.
    pub fn new(p: Params) -> Result<Self> {
        let bad = |field: &str, reason: String| Err(Error::invalid("edm", field, reason));
        if !(p.sigma_data > 0.0 && p.sigma_data.is_finite()) {
            return bad(
                "sigma_data",
                format!("must be finite and > 0, got {}", p.sigma_data),
            );
        }
        if !p.p_mean.is_finite() {
            return bad("p_mean", format!("must be finite, got {}", p.p_mean));
        }
        if !(p.p_std > 0.0 && p.p_std.is_finite()) {
            return bad("p_std", format!("must be finite and > 0, got {}", p.p_std));
        }
        Ok(Self { p })
    }

    /// The parameters.
    pub fn params(&self) -> Params {
        self.p
    }

    /// z = (ln σ̃ − p_mean)/p_std at half log-SNR λ (ln σ̃ = −λ).
    fn z(&self, lambda: f64) -> f64 {
        (-lambda - self.p.p_mean) / self.p.p_std
    }

    /// (z_min, z_max) = (z(t_ε), z(T)) of `sde`.
    fn z_range(&self, sde: &dyn ForwardSde) -> (f64, f64) {
        let z_min = self.z(sde.log_snr(sde.t_eps()));
        (z_min, self.z(sde.log_snr(sde.t_max())))
    }
}

/// Z = Φ(b) − Φ(a) for a ≤ b, from the upper tail when a > 0 (no cancellation near 1).
fn mass(a: f64, b: f64) -> f64 {
    let n = Normal::standard();
    if a > 0.0 {
        n.sf(a) - n.sf(b)
    } else {
        n.cdf(b) - n.cdf(a)
    }
}

impl Weighting for Edm {
    fn eps_weight(&self, c: &TimeCoefs) -> f64 {
        1.0 + (c.sigma_tilde() / self.p.sigma_data).powi(2)
    }

    fn t_density(&self, sde: &dyn ForwardSde, c: &TimeCoefs) -> Option<f64> {
        if !(c.t >= sde.t_eps() && c.t <= sde.t_max()) {
            return Some(0.0);
        }
        let (z_min, z_max) = self.z_range(sde);
        let d_log_sigma_tilde = c.g2 / (2.0 * c.sigma * c.sigma);
        let pdf = Normal::standard().pdf(self.z(c.lambda));
        Some(pdf / self.p.p_std * d_log_sigma_tilde / mass(z_min, z_max))
    }

    fn sample_t(&self, sde: &dyn ForwardSde, u: f64) -> Option<f64> {
        let n = Normal::standard();
        let (z_min, z_max) = self.z_range(sde);
        let (u, z_mass) = (u.clamp(0.0, 1.0), mass(z_min, z_max));
        let z = if z_min > 0.0 {
            -n.inverse_cdf((n.sf(z_min) - u * z_mass).clamp(0.0, 1.0))
        } else {
            n.inverse_cdf((n.cdf(z_min) + u * z_mass).clamp(0.0, 1.0))
        };
        let log_sigma_tilde = self.p.p_mean + self.p.p_std * z.clamp(z_min, z_max);
        let t = sde.t_of_log_snr(-log_sigma_tilde);
        Some(t.clamp(sde.t_eps(), sde.t_max()))
    }
}

register_weighting!(
    "edm",
    "EDM (Karras et al. 2022): w = (σ̃² + σ_d²)/σ_d² on ‖ε̂ − ε‖², ln σ̃ ~ N(−1.2, 1.2²)",
    Params,
    Edm::new
);
