//! Min-SNR-γ weighting (Hang et al. 2023): the x₀ loss weighted by min(SNR, γ), which caps
//! the weight of the low-noise times that dominate an x₀ loss.
//!
//! # Formula
//! MATH.md §4: the x₀-space weight is min(SNR, γ) and ‖x̂₀ − x₀‖² = ‖ε̂ − ε‖²/SNR, so the
//! weight on ‖ε̂ − ε‖² is w_ε(t) = min(SNR, γ)/SNR = min(1, γ/SNR), with SNR = α²/σ² = e^{2λ}
//! (the kernel's `TimeCoefs::snr`). It is 1 (the simple weighting) where SNR ≤ γ, i.e. at
//! high noise, and γ/SNR below. In another target's space the weight is w_ε/k(t)². Times are
//! drawn uniformly on [t_ε, T].
//!
//! # Parameters
//! - `gamma`: the cap γ on the x₀-space weight, finite and > 0, default 5.
//!
//! # Claims
//! Finite, positive and at most 1 on [t_ε, T] of every SDE (1 also at α = 0, γ/SNR → 0 at
//! σ = 0); equal losses in every parameterization.
//!
//! # References
//! Hang, Gu, Li, Bao, Chen, Hu, Geng & Guo, "Efficient Diffusion Training via Min-SNR
//! Weighting Strategy", ICCV 2023 (w_t = min{SNR(t), γ} on the x₀ loss; γ = 5 by default).

use sdeflow_kernel::{Error, Result, TimeCoefs, Weighting, register_weighting};
use serde::{Deserialize, Serialize};

/// The min-SNR-γ weighting's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The cap γ on the x₀-space weight min(SNR, γ).
    pub gamma: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self { gamma: 5.0 }
    }
}

/// w_ε = min(1, γ/SNR).
#[derive(Debug, Clone, Copy)]
pub struct MinSnr {
    gamma: f64,
}

impl MinSnr {
    /// Checks that γ is finite and positive.
    pub fn new(p: Params) -> Result<Self> {
        if !(p.gamma > 0.0 && p.gamma.is_finite()) {
            return Err(Error::invalid(
                "min_snr",
                "gamma",
                format!("must be finite and > 0, got {}", p.gamma),
            ));
        }
        Ok(Self { gamma: p.gamma })
    }

    /// The cap γ.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }
}

impl Weighting for MinSnr {
    fn eps_weight(&self, c: &TimeCoefs) -> f64 {
        (self.gamma / c.snr()).min(1.0)
    }
}

register_weighting!(
    "min_snr",
    "min-SNR-γ weighting (Hang et al. 2023): w = min(1, γ/SNR) on ‖ε̂ − ε‖²",
    Params,
    MinSnr::new
);
