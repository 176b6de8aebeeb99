//! The cosine-schedule variance-preserving SDE (Nichol & Dhariwal 2021), as a continuous-time
//! linear SDE.
//!
//! # Formula
//! MATH.md §1 (the "cosine" row), with k = (π/2)/(1 + s), a = k (t + s), b = k s:
//! α = cos a / cos b, σ = √(1 − α²), f = d log α/dt = −k tan a, g² = −2f (σ² = 1 − α² makes
//! dσ²/dt − 2fσ² = −2fα² − 2fσ² = −2f). Evaluated stably: cos a = sin(k (1 − t)) (exact near
//! T, where a → π/2), so α = sin(k (1 − t))/cos b, and f = −k/tan(k (1 − t)) for t ≥ ½
//! (−k tan a below, keeping tan's argument under π/4, where it is well conditioned); and with
//! cos²b − cos²a = sin(a − b) sin(a + b), σ = √(sin(k t) sin(k (t + 2s)))/cos b, never 1 − α².
//! λ = log(α/σ) = log sin(k (1 − t)) − ½ (log sin(k t) + log sin(k (t + 2s))) (cos b cancels).
//! Inverse: with σ̃ = e^{−λ} = σ/α and α = 1/√(1 + σ̃²), cos a = α cos b is arccos's
//! ill-conditioned end near t = 0, so take tan a = √(σ̃² + sin²b)/cos b instead and get
//! a − b from its own sine and cosine: with r = √(σ̃² + sin²b),
//! a − b = atan2(cos b · σ̃²/(r + sin b), r sin b + cos²b), t = (a − b)/k — relatively exact
//! at every t. The prior is N(0, I); the default grid is uniform in t (MATH.md §5).
//!
//! # Parameters
//! - `s`: the offset that keeps β(0) away from 0, default 0.008.
//! - `t_max`: the end time T, default 0.9946 (DPM-Solver's choice; must be < 1, where α = 0
//!   and β = −2f is infinite).
//! - `t_eps`: where sampling stops, default 1e-3.
//!
//! # Claims
//! f = d log α/dt and g² = dσ²/dt − 2 f σ² (checked by central differences); α² + σ² = 1;
//! α, σ and the SNR monotone; t(λ(t)) = t; at T = 0.9946, α(T)² = 7.08e-5, so the N(0, I)
//! prior's KL per dimension against the marginal of data N(1, 1) is α(T)²/2 = 3.54e-5.
//!
//! # References
//! Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021, eq. (17)
//! (their ᾱ is α² here); Lu, Zhou, Bao, Chen, Li & Zhu, "DPM-Solver", NeurIPS 2022, and its
//! reference code's `NoiseScheduleVP(schedule='cosine')` (T = 0.9946, λ and its inverse).

use sdeflow_kernel::{Error, ForwardSde, Result, register_sde};
use serde::{Deserialize, Serialize};

/// The cosine VP SDE's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The schedule's offset s.
    pub s: f64,
    /// The end time T (below 1).
    pub t_max: f64,
    /// Where sampling stops, t_ε.
    pub t_eps: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            s: 0.008,
            t_max: 0.9946,
            t_eps: 1e-3,
        }
    }
}

/// The cosine VP SDE.
#[derive(Debug, Clone, Copy)]
pub struct VpCosine {
    p: Params,
    /// k = (π/2)/(1 + s).
    k: f64,
    /// (sin b, cos b), b = k s.
    sin_b: f64,
    cos_b: f64,
}

impl VpCosine {
    /// Checks the parameters: s ≥ 0, 0 < t_ε < T < 1.
    pub fn new(p: Params) -> Result<Self> {
        let bad = |field: &str, reason: String| Err(Error::invalid("vp_cosine", field, reason));
        if !(p.s >= 0.0 && p.s.is_finite()) {
            return bad("s", format!("must be finite and ≥ 0, got {}", p.s));
        }
        if !(p.t_max > 0.0 && p.t_max < 1.0) {
            return bad(
                "t_max",
                format!("must lie in (0, 1) (α(1) = 0), got {}", p.t_max),
            );
        }
        if !(p.t_eps > 0.0 && p.t_eps < p.t_max) {
            return bad(
                "t_eps",
                format!("must lie in (0, t_max = {}), got {}", p.t_max, p.t_eps),
            );
        }
        let k = std::f64::consts::FRAC_PI_2 / (1.0 + p.s);
        let (sin_b, cos_b) = (k * p.s).sin_cos();
        Ok(Self { p, k, sin_b, cos_b })
    }
}

impl ForwardSde for VpCosine {
    fn t_max(&self) -> f64 {
        self.p.t_max
    }
    fn t_eps(&self) -> f64 {
        self.p.t_eps
    }
    fn alpha(&self, t: f64) -> f64 {
        (self.k * (1.0 - t)).sin() / self.cos_b
    }
    fn sigma(&self, t: f64) -> f64 {
        let k = self.k;
        ((k * t).sin() * (k * (t + 2.0 * self.p.s)).sin()).sqrt() / self.cos_b
    }
    fn drift_coef(&self, t: f64) -> f64 {
        // tan's argument kept below π/4, where it is well conditioned.
        if t < 0.5 {
            -self.k * (self.k * (t + self.p.s)).tan()
        } else {
            -self.k / (self.k * (1.0 - t)).tan()
        }
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        -2.0 * self.drift_coef(t)
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
    fn log_snr(&self, t: f64) -> f64 {
        let k = self.k;
        (k * (1.0 - t)).sin().ln()
            - 0.5 * ((k * t).sin().ln() + (k * (t + 2.0 * self.p.s)).sin().ln())
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        // σ̃ = e^{−λ}; past 1e100 t rounds to 1 anyway, and σ̃² stays finite.
        let st = (-lambda).exp().min(1e100);
        let r = st.hypot(self.sin_b);
        let sin_ab = self.cos_b * st * st / (r + self.sin_b);
        let cos_ab = r * self.sin_b + self.cos_b * self.cos_b;
        sin_ab.atan2(cos_ab) / self.k
    }
}

register_sde!(
    "vp_cosine",
    "cosine-schedule VP SDE (Nichol & Dhariwal 2021): α = cos(π/2·(t+s)/(1+s))/cos(π/2·s/(1+s)), σ² = 1 − α²",
    Params,
    VpCosine::new
);
