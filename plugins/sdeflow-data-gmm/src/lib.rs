//! A Gaussian mixture as data: exact draws of p₀ = Σ_k w_k N(m_k, S_k), with the law itself,
//! which the `gmm_oracle` model reads (a config names the mixture once).
//!
//! # Formula
//! MATH.md §7. Row i of a split is drawn from its own draws of the kernel's noise source
//! (keyed by seed, split and i): the component k is the first whose cumulative weight exceeds
//! the row's uniform u, then x = m_k + L_k z with S_k = L_k L_kᵀ (Cholesky) and z the row's d
//! standard normals. The held-out split is a second, independent stream of draws.
//!
//! # Parameters
//! - `weights`: the mixture weights, non-negative, summing to 1. Default `[1.0]`.
//! - `means`: one d-vector per component. Default `[[0.0, 0.0]]`.
//! - `covariances`: per component `isotropic(s)` (S = s² I), `diagonal([v, ...])` (variances)
//!   or `full([[...], ...])` (symmetric positive definite). Default `[isotropic(1.0)]`.
//! - `labels`: give each row its component as a class label (0 … K − 1). Default `false`.
//!
//! # Claims
//! Rows of shape [d], unbounded, finite; row i the same for any batch split, shard or rerun;
//! the mean and covariance of 20,000 rows within 4 standard errors of the law's
//! (Σ w_k m_k and Σ w_k (S_k + m_k m_kᵀ) − m mᵀ); the exact law is the mixture.
//!
//! # References
//! Bishop, "Pattern Recognition and Machine Learning", 2006, §2.3.9 (Gaussian mixtures) and
//! §11.1.1 (sampling a Gaussian through its Cholesky factor).

use sdeflow_kernel::{
    Error, Result,
    data::MixtureData,
    mixture::{Covariance, GaussianMixture},
    register_data,
};
use serde::{Deserialize, Serialize};

/// The mixture and whether rows carry their component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Mixture weights.
    pub weights: Vec<f64>,
    /// Component means.
    pub means: Vec<Vec<f64>>,
    /// Component covariances.
    pub covariances: Vec<Covariance>,
    /// Rows carry their component as a label.
    pub labels: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            weights: vec![1.0],
            means: vec![vec![0.0, 0.0]],
            covariances: vec![Covariance::Isotropic(1.0)],
            labels: false,
        }
    }
}

/// Builds the data: the kernel's [`MixtureData`] of the mixture `p` names.
pub fn build(p: Params) -> Result<MixtureData> {
    // The kernel's mixture names itself in errors; the user wrote `gmm`.
    let law = GaussianMixture::new(p.weights, p.means, p.covariances).map_err(|e| match e {
        Error::InvalidParam { field, reason, .. } => Error::InvalidParam {
            plugin: "gmm".into(),
            field,
            reason,
        },
        other => other,
    })?;
    MixtureData::new(law, p.labels)
}

register_data!(
    "gmm",
    "a Gaussian mixture: exact draws and the exact law (which gmm_oracle reads)",
    Params,
    build,
);
