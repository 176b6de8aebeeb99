//! Annealed Langevin dynamics (NCSN's sampler): corrector-only sampling down a noise ladder.
//!
//! # Formula
//! Song & Ermon 2019, Algorithm 1, on the pipeline's grid t_0 = T > t_1 > … > t_L = t_ε: the
//! grid's L steps are the ladder's levels, and at each level s = t_i the sampler takes M
//! Langevin steps toward p_s, `x ← x + ε_i ŝ(x, s) + sqrt(2 ε_i) z`, each with one
//! evaluation and a fresh z ~ N(0, I). There is no predictor: the previous level's samples
//! start the chain (MATH.md §5's corrector alone), first rescaled by α_{t|s} = α_s/α_t (no
//! evaluation). The data's part of x_t is α_t x₀, so p_s's modes sit at α_s/α_t times p_t's.
//! On NCSN's VE ladder α = 1 and this is NCSN's algorithm. Elsewhere, without it, the chain
//! must carry the modes outward by Langevin steps of size ∝ σ², which it cannot do at low noise:
//! on the ring under linear_flow, sliced W2 0.26 against a floor of 0.08.
//!
//! NCSN's step size is ε_i = ε σ_i²/σ_L² with σ_i = σ(t_i). It is written here, batch-free
//! (no norms, so a sample never depends on its batch-mates), as `ε_i = 2 (r σ_i)²`, the same
//! rule with ε = 2 r² σ_L². It is `pc`'s expected-norm rule with a = 1.
//!
//! On p_s = N(μ, C I), a Langevin step of size ε has the fixed point N(μ, C/(1 − ε/(2C)) I).
//! With ε = 2 (r σ_s)², the variance is inflated by 1/(1 − r² σ_s²/C) ≤ 1/(1 − r²). The bias
//! does not shrink as levels are added: annealed Langevin has no order, it plateaus.
//!
//! # Parameters
//! - `steps_per_level`: M ≥ 1 Langevin steps at each level. Default 100 (NCSN's T).
//! - `snr`: r in (0, 1). Default 0.16 (score_sde's corrector r): ε_i = 2 (r σ_i)².
//!
//! # Claims
//! - **Cost:** NFE per step (per level) = M, so a run costs L·M.
//! - **Kind:** stochastic; affine in x for an affine score.
//! - **Order:** none. As L grows it converges to the Langevin plateau above
//!   ([`Order::Plateau`] with r), which conformance computes in closed form on a single
//!   Gaussian. Its samples at the defaults are within the sliced-W2 floor plus that plateau
//!   bias.
//! - **Default schedule:** 10 levels (NCSN's L) on the log-SNR grid (geometric in σ/α, as
//!   NCSN's geometric σ ladder), 1,000 NFE.
//!
//! # References
//! Song & Ermon, "Generative Modeling by Estimating Gradients of the Data Distribution",
//! NeurIPS 2019, §4.3 and Algorithm 1; `anneal_Langevin_dynamics` in the NCSN code; Roberts &
//! Tweedie, Bernoulli 2(4), 1996 (the unadjusted Langevin algorithm's bias).

use sdeflow_kernel::{
    Discretization, Equation, Error, ForwardSde, GridKind, Order, Result, Solver, SolverClaims,
    State, Step, StepContext, corrector_snr, register_solver,
};
use serde::{Deserialize, Serialize};

/// Levels of the default ladder (NCSN's L).
const DEFAULT_LEVELS: usize = 10;

/// The sampler's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Langevin steps per level, M ≥ 1.
    pub steps_per_level: usize,
    /// The signal-to-noise ratio r in (0, 1): ε_i = 2 (r σ_i)².
    pub snr: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            steps_per_level: 100,
            snr: 0.16,
        }
    }
}

/// Annealed Langevin dynamics.
#[derive(Debug, Clone, Copy)]
pub struct AnnealedLangevin {
    steps_per_level: usize,
    snr: f64,
}

impl AnnealedLangevin {
    /// Checks M ≥ 1 and 0 < r < 1.
    pub fn new(p: Params) -> Result<Self> {
        if p.steps_per_level == 0 {
            return Err(Error::invalid(
                "annealed_langevin",
                "steps_per_level",
                "must be at least 1 (NCSN takes 100 Langevin steps per level)",
            ));
        }
        Ok(Self {
            steps_per_level: p.steps_per_level,
            snr: corrector_snr("annealed_langevin", p.snr)?,
        })
    }
}

impl Solver for AnnealedLangevin {
    fn claims(&self) -> SolverClaims {
        SolverClaims {
            order: Order::Plateau { snr: self.snr },
            nfe_per_step: self.steps_per_level,
            stochastic: true,
            affine: true,
            equation: Equation::ReverseSde,
            natural_grid: GridKind::LogSnr,
        }
    }

    fn default_discretization(&self, _sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: DEFAULT_LEVELS,
            grid: GridKind::LogSnr,
        }
    }

    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let to = &ctx.to;
        let eps = 2.0 * (self.snr * to.sigma).powi(2);
        // The signal moves with α: p_s's modes sit at α_s/α_t times p_t's (1 on NCSN's VE).
        let ratio = to.alpha / ctx.from.alpha;
        let mut state = if ratio == 1.0 {
            state.clone()
        } else {
            state.with_x(state.x.affine(ratio, 0.0)?)
        };
        for _ in 0..self.steps_per_level {
            let x = ctx.langevin(&state, eps)?;
            state = state.with_x(x);
        }
        Ok(Step::to(state))
    }
}

register_solver!(
    "annealed_langevin",
    "Annealed Langevin dynamics (NCSN): M batch-free Langevin steps at each level of the grid, no predictor (plateaus)",
    Params,
    AnnealedLangevin::new
);
