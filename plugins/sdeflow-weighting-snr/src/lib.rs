//! SNR weighting: the weight α²/σ² on the ε error, as MATH.md §4 lists it.
//!
//! # Formula
//! MATH.md §4: w_ε(t) = α²/σ² = SNR(t) = e^{2λ} on ‖ε̂ − ε‖², computed from the SDE's λ (the
//! kernel's `TimeCoefs::snr`). In another target's space the weight is w_ε/k(t)², k the
//! parameterization's loss scale. Times are drawn uniformly on [t_ε, T].
//!
//! Note: since ‖x̂₀ − x₀‖² = (σ/α)² ‖ε̂ − ε‖² (MATH.md §4), this is **not** the plain x₀ mean
//! squared error that MATH.md's "(= plain x₀-MSE)" says: in x₀ space (k = σ/α) its weight is
//! SNR². The plain x₀-MSE is w_ε = σ²/α² = 1/SNR, and the literature's "SNR weighting" (x₀
//! weight SNR, Salimans & Ho 2022 §4; Hang et al. 2023) is w_ε = 1, the `simple` weighting.
//!
//! # Parameters
//! None: `snr()`.
//!
//! # Claims
//! Finite and positive on [t_ε, T] of every SDE; equal losses in every parameterization; in
//! x₀ space (k = σ/α) the weight is SNR², in score space (k = 1/σ) it is α².
//!
//! # References
//! Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR 2022,
//! §4 (losses in ε and x space differ by a factor SNR); Kingma, Salimans, Poole & Ho,
//! "Variational Diffusion Models", NeurIPS 2021 (the loss in terms of SNR(t)).

use sdeflow_kernel::{TimeCoefs, Weighting, register_weighting};
use serde::{Deserialize, Serialize};

/// The SNR weighting has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// w_ε = α²/σ².
#[derive(Debug, Clone, Copy, Default)]
pub struct Snr;

impl Weighting for Snr {
    fn eps_weight(&self, c: &TimeCoefs) -> f64 {
        c.snr()
    }
}

register_weighting!(
    "snr",
    "SNR weighting: w = α²/σ² on ‖ε̂ − ε‖²",
    Params,
    |_: Params| Ok(Snr)
);
