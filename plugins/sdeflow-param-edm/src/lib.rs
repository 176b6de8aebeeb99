//! EDM's preconditioned denoiser (Karras et al. 2022): the network F sees a unit-variance
//! input and a log-noise input, and D = c_skip x̃ + c_out F is the x₀ estimate, on any SDE.
//!
//! # Formula
//! Karras et al.'s Table 1 is written in the VE-equivalent variables x̃ = x/α and σ̃ = σ/α
//! (MATH.md §1), where x̃ = x₀ + σ̃ ε: with σ_d the data's standard deviation and
//! r = √(σ̃² + σ_d²),
//!
//! c_skip = σ_d²/r², c_out = σ̃ σ_d/r, c_in = 1/r, c_noise = ¼ ln σ̃, x̂₀ = c_skip x̃ + c_out F.
//!
//! In sdeflow's x = α x̃, with R = √(σ² + α² σ_d²) = α r, the coefficients the kernel applies
//! (MATH.md §9) are:
//! - input: the network sees c_in x̃ = x/R (so c_in = 1/R on x) and c_noise = ¼ ln σ̃ = −λ/4;
//! - x̂₀ = (σ σ_d/R) F + (α σ_d²/R²) x;
//! - ε̂ = (x − α x̂₀)/σ = −(α σ_d/R) F + (σ/R²) x (using 1 − c_skip = σ̃²/r²);
//! - target F* = (x₀ − c_skip x̃)/c_out = (σ/(σ_d R)) x₀ − (α σ_d/R) ε.
//!
//! At a fixed x, F − F* = −(R/(α σ_d)) (ε̂ − ε), so the loss scale is k(t) = R/(α σ_d): EDM's
//! weighting w_ε = (σ̃² + σ_d²)/σ_d² becomes w_ε/k² = 1 on ‖F − F*‖², the unit effective
//! weight EDM's preconditioning was designed for (Karras et al., §5 and Appendix B.6). On EDM's
//! own SDE (α = 1, σ = σ̃) every coefficient is Table 1's.
//!
//! # Parameters
//! - `sigma_data`: σ_d, the data's standard deviation, finite and > 0. Default 0.5 (EDM's, for
//!   images scaled to [−1, 1]).
//!
//! # Claims
//! Round trips F → ε̂ → F and through x̂₀ and ŝ are exact to 1e-10 (norm-relative, f64) on every
//! SDE away from α = 0 and σ = 0; the training target equals the output converted from the true
//! ε; losses in this target with the matched weight equal the ε losses; on α = 1 the
//! coefficients are Table 1's; the network's input c_in x_t has unit variance per coordinate
//! when x₀ has variance σ_d² (the preconditioning's purpose).
//!
//! # References
//! Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative
//! Models", NeurIPS 2022, Table 1 ("Network and preconditioning": c_skip, c_out, c_in, c_noise)
//! and Appendix B.6.

use sdeflow_kernel::{Error, Lin, Parameterization, TargetLin, TimeCoefs, register_param};
use serde::{Deserialize, Serialize};

/// EDM's preconditioning parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// σ_d, the standard deviation of the data.
    pub sigma_data: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self { sigma_data: 0.5 }
    }
}

/// EDM's preconditioned denoiser as a parameterization.
#[derive(Debug, Clone, Copy)]
pub struct Edm {
    sigma_data: f64,
}

impl Edm {
    /// Checks σ_d.
    pub fn new(p: Params) -> sdeflow_kernel::Result<Self> {
        if !(p.sigma_data.is_finite() && p.sigma_data > 0.0) {
            return Err(Error::invalid(
                "edm",
                "sigma_data",
                format!("must be finite and positive, got {}", p.sigma_data),
            ));
        }
        Ok(Self {
            sigma_data: p.sigma_data,
        })
    }

    /// R = √(σ² + α² σ_d²) = α √(σ̃² + σ_d²).
    fn r(&self, c: &TimeCoefs) -> f64 {
        c.sigma.hypot(c.alpha * self.sigma_data)
    }
}

impl Parameterization for Edm {
    fn eps(&self, c: &TimeCoefs) -> Lin {
        let r = self.r(c);
        Lin {
            out: -c.alpha * self.sigma_data / r,
            x: c.sigma / (r * r),
        }
    }
    fn x0(&self, c: &TimeCoefs) -> Lin {
        let (r, sd) = (self.r(c), self.sigma_data);
        Lin {
            out: c.sigma * sd / r,
            x: c.alpha * sd * sd / (r * r),
        }
    }
    fn target(&self, c: &TimeCoefs) -> TargetLin {
        let (r, sd) = (self.r(c), self.sigma_data);
        TargetLin {
            x0: c.sigma / (sd * r),
            eps: -c.alpha * sd / r,
        }
    }
    fn c_in(&self, c: &TimeCoefs) -> f64 {
        1.0 / self.r(c)
    }
    fn c_noise(&self, c: &TimeCoefs) -> f64 {
        -0.25 * c.lambda
    }
}

register_param!(
    "edm",
    "EDM's preconditioned denoiser (Karras et al. 2022): c_skip, c_out, c_in, c_noise with σ_d",
    Params,
    Edm::new
);
