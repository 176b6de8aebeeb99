//! DDPM's discrete schedule as a continuous VP SDE (`vp_discrete`), for models trained on it.
//!
//! # Formula
//! MATH.md §1 (its `vp_discrete` paragraph). Linear betas β_j = β_start + j (β_end − β_start)/(N − 1),
//! j = 0..N−1, and ᾱ_i = Π_{j≤i} (1 − β_j). log α is piecewise linear in t through the knots
//! t_i = (i + 1)/N with log α(t_i) = ½ log ᾱ_i = ½ Σ_{j≤i} log1p(−β_j), continued linearly
//! from the first segment below t_0 and from the last one above t_{N−1} = T = 1. So
//! f = d log α/dt = N (log α_{k+1} − log α_k) on [t_k, t_{k+1}] (piecewise constant; at a knot,
//! the segment to its right), σ = √(−expm1(2 log α)), g² = dσ²/dt − 2fσ² = −2f, and
//! λ = log α − ½ log(−expm1(2 log α)). The inverse is exact per segment: λ fixes
//! log α = −½ softplus(−2λ), which is linear in t on its segment. The prior is N(0, I).
//! A network trained on index n = 0..N−1 is evaluated at n = N t − 1.
//! Below t* = t_0 − log α_0/(N (log α_1 − log α_0)) the continued line has α > 1 (σ is NaN):
//! t_ε must lie above it.
//!
//! # Parameters
//! - `beta_start`: β_0, default 1e-4.
//! - `beta_end`: β_{N−1}, default 0.02.
//! - `num_train_timesteps`: N, the number of discrete steps (DDPM's T), default 1000.
//! - `t_eps`: where sampling stops, default `None`, meaning 1/N = t_0 (1e-3 for N = 1000).
//!
//! # Claims
//! α(t_i)² = ᾱ_i; f = d log α/dt and g² = dσ²/dt − 2 f σ² between knots (checked by central
//! differences); α falls, σ rises and λ falls strictly; t(λ(t)) = t exactly per segment; the
//! prior matches the marginal at T (ᾱ_{N−1} ≈ 4.0e-5: KL per dimension ᾱ_{N−1}/2 ≈ 2.0e-5
//! for data N(1, 1)).
//!
//! # References
//! Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020, §4 (β_t linear
//! from 1e-4 to 0.02, T = 1000); Lu, Zhou, Bao, Chen, Li & Zhu, "DPM-Solver", NeurIPS 2022,
//! the appendix on discrete-time DPMs and the code's NoiseScheduleVP('discrete') (t_n = (n + 1)/N,
//! log α interpolated linearly, inverse_lambda through log α = −½ logaddexp(0, −2λ)).

use sdeflow_kernel::{Error, ForwardSde, Result, register_sde};
use serde::{Deserialize, Serialize};

/// The discrete VP schedule's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// β_0, the first step's beta.
    pub beta_start: f64,
    /// β_{N−1}, the last step's beta.
    pub beta_end: f64,
    /// N, the number of discrete training steps.
    pub num_train_timesteps: usize,
    /// Where sampling stops, t_ε; `None` is 1/N.
    pub t_eps: Option<f64>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            beta_start: 1e-4,
            beta_end: 0.02,
            num_train_timesteps: 1000,
            t_eps: None,
        }
    }
}

/// The discrete VP schedule.
#[derive(Clone)]
pub struct VpDiscrete {
    p: Params,
    t_eps: f64,
    /// The knots t_i = (i + 1)/N.
    knots: Vec<f64>,
    /// log α(t_i) = ½ Σ_{j≤i} log1p(−β_j).
    log_alpha: Vec<f64>,
}

impl std::fmt::Debug for VpDiscrete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VpDiscrete")
            .field("p", &self.p)
            .field("t_eps", &self.t_eps)
            .finish_non_exhaustive()
    }
}

impl VpDiscrete {
    /// Checks the parameters: β_start, β_end in (0, 1), 2 ≤ N ≤ 10⁶, t* < t_ε < 1.
    pub fn new(p: Params) -> Result<Self> {
        let bad = |field: &str, reason: String| Err(Error::invalid("vp_discrete", field, reason));
        for (field, beta) in [("beta_start", p.beta_start), ("beta_end", p.beta_end)] {
            if !(beta > 0.0 && beta < 1.0) {
                return bad(field, format!("must lie in (0, 1), got {beta}"));
            }
        }
        let n = p.num_train_timesteps;
        if !(2..=1_000_000).contains(&n) {
            return bad(
                "num_train_timesteps",
                format!("must lie in 2..=1000000, got {n}"),
            );
        }
        let step = (p.beta_end - p.beta_start) / (n - 1) as f64;
        let mut sum = 0.0;
        let log_alpha: Vec<f64> = (0..n)
            .map(|j| {
                let beta = if j == n - 1 {
                    p.beta_end
                } else {
                    p.beta_start + j as f64 * step
                };
                sum += 0.5 * (-beta).ln_1p();
                sum
            })
            .collect();
        let knots = (1..=n).map(|i| i as f64 / n as f64).collect();
        let mut sde = Self {
            p,
            t_eps: 1.0 / n as f64,
            knots,
            log_alpha,
        };
        if let Some(t_eps) = p.t_eps {
            let t_star =
                (1.0 - sde.log_alpha[0] / (sde.log_alpha[1] - sde.log_alpha[0])) / n as f64;
            if !(t_eps > 0.0 && t_eps < 1.0 && sde.log_alpha_at(t_eps) < 0.0) {
                return bad(
                    "t_eps",
                    format!(
                        "must lie in (0, 1) and above t* = {t_star:e}, where α reaches 1, got {t_eps}"
                    ),
                );
            }
            sde.t_eps = t_eps;
        }
        Ok(sde)
    }

    /// The segment k of [t_k, t_{k+1}] used at `t` and t's offset N t − 1 − k within it.
    fn segment(&self, t: f64) -> (usize, f64) {
        let n = self.log_alpha.len();
        let u = t * n as f64 - 1.0;
        let k = (u.floor().max(0.0) as usize).min(n - 2);
        (k, u - k as f64)
    }

    fn log_alpha_at(&self, t: f64) -> f64 {
        let (k, frac) = self.segment(t);
        let la = &self.log_alpha;
        la[k] + frac * (la[k + 1] - la[k])
    }
}

impl ForwardSde for VpDiscrete {
    fn t_max(&self) -> f64 {
        1.0
    }
    fn t_eps(&self) -> f64 {
        self.t_eps
    }
    fn alpha(&self, t: f64) -> f64 {
        self.log_alpha_at(t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        (-(2.0 * self.log_alpha_at(t)).exp_m1()).sqrt()
    }
    fn drift_coef(&self, t: f64) -> f64 {
        let (k, _) = self.segment(t);
        (self.log_alpha[k + 1] - self.log_alpha[k]) * self.log_alpha.len() as f64
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        -2.0 * self.drift_coef(t)
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
    fn knots(&self) -> Vec<f64> {
        self.knots.clone()
    }
    fn log_snr(&self, t: f64) -> f64 {
        let la = self.log_alpha_at(t);
        la - 0.5 * (-(2.0 * la).exp_m1()).ln()
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        // log α = −½ log(1 + e^{−2λ}), a softplus that neither overflows nor loses digits.
        let x = -2.0 * lambda;
        let softplus = sdeflow_kernel::schedule::softplus(x);
        let target = -0.5 * softplus;
        let la = &self.log_alpha;
        let n = la.len();
        // log α falls in t: the first knot at or below the target ends the segment.
        let k = la
            .partition_point(|&v| v > target)
            .saturating_sub(1)
            .min(n - 2);
        (k as f64 + 1.0 + (target - la[k]) / (la[k + 1] - la[k])) / n as f64
    }
}

register_sde!(
    "vp_discrete",
    "DDPM's discrete linear-beta schedule (DPM-Solver's piecewise-linear log α): α(t_i)² = Π_{j≤i} (1 − β_j)",
    Params,
    VpDiscrete::new
);
