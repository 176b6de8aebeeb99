//! Predictor–corrector: a registered stochastic predictor, then Langevin corrector steps.
//!
//! # Formula
//! MATH.md §5 (Song et al. 2021, Algorithms 4 and 5, in the paper's order): a step t → s < t is
//! the predictor's step to s, then M Langevin steps at s,
//! `x ← x + ε_L ŝ(x, s) + sqrt(2 ε_L) z`, each with one evaluation and a fresh z ~ N(0, I).
//! The step size is batch-free: `ε_L = 2 a (r σ_s)²` (E‖z‖² = d and E‖∇ log p_s‖² ≈ d/σ_s²),
//! with a = α_{t|s}² from the grid interval (score_sde's a = 1 − β_i, which sub-VP lacks).
//! score_sde's rule ε_L = 2 a (r ‖z‖/‖ŝ‖)² with norms averaged over the batch makes a sample
//! depend on its batch-mates and is not offered; the same rule with each sample's own norms is
//! the opt-in `step_size: per_sample_norm` (for high dimension; in 2-D it explodes where
//! ‖ŝ‖ → 0 at every mode, MATH.md §5).
//! On p_s = N(μ, C I) a Langevin step of size ε has the fixed point N(μ, C/(1 − ε/(2C)) I):
//! the corrector's bias does not shrink with the step, so PC has no order, it plateaus; with
//! ε = 2 (r σ_s)² the variance is inflated by 1/(1 − r² σ_s²/C) ≤ 1/(1 − r²).
//!
//! # Parameters
//! - `predictor`: a registered stochastic solver, written as in a config. Default
//!   `reverse_diffusion()`.
//! - `corrector_steps`: M ≥ 1 Langevin steps per step. Default 1.
//! - `snr`: r in (0, 1). Default 0.16 (score_sde's).
//! - `step_size`: `expected_norm` (default, batch-free and affine) or `per_sample_norm`.
//!
//! # Claims
//! Derived from the predictor's: NFE per step = the predictor's + M; stochastic; affine in x
//! for an affine score when the predictor is and the step size is `expected_norm`; its grid is
//! the predictor's. No order: it converges, as N grows, to the Langevin plateau above
//! ([`Order::Plateau`] with r), which conformance computes in closed form on a single Gaussian.
//! Default: the predictor's grid and as many steps as fit in 1,000 NFE (500 with
//! `reverse_diffusion()` and M = 1).
//!
//! # References
//! Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations",
//! ICLR 2021, §4.2 and Algorithms 4–5; `LangevinCorrector` in score_sde's `sampling.py`;
//! Roberts & Tweedie, Bernoulli 2(4), 1996 (the unadjusted Langevin algorithm's bias).

use std::sync::Arc;

use candle_core::{D, Tensor};
use sdeflow_kernel::{
    Discretization, Equation, Error, ForwardSde, Order, Result, Solver, SolverClaims, SolverRef,
    State, Step, StepContext, Transition, corrector_snr, register_solver,
};
use serde::{Deserialize, Serialize};

/// The most NFE a default schedule spends (DESIGN.md).
const DEFAULT_BUDGET: usize = 1000;

/// How the Langevin step size is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepSize {
    /// ε_L = 2 a (r σ_s)²: the same for every sample.
    #[default]
    ExpectedNorm,
    /// ε_L = 2 a (r ‖z‖/‖ŝ‖)² with each sample's own norms.
    PerSampleNorm,
}

/// The predictor–corrector's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The predictor: a registered stochastic solver.
    pub predictor: SolverRef,
    /// Langevin steps per step, M ≥ 1.
    pub corrector_steps: usize,
    /// The signal-to-noise ratio r in (0, 1).
    pub snr: f64,
    /// The step-size rule.
    pub step_size: StepSize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            predictor: SolverRef::named("reverse_diffusion"),
            corrector_steps: 1,
            snr: 0.16,
            step_size: StepSize::ExpectedNorm,
        }
    }
}

/// The predictor–corrector sampler.
#[derive(Debug, Clone)]
pub struct Pc {
    predictor_name: &'static str,
    predictor: Arc<dyn Solver>,
    corrector_steps: usize,
    snr: f64,
    step_size: StepSize,
}

impl Pc {
    /// Resolves the predictor and checks it is stochastic, M ≥ 1 and 0 < r < 1.
    pub fn new(p: Params) -> Result<Self> {
        let predictor = p.predictor.resolve()?;
        if !predictor.claims().stochastic {
            return Err(Error::invalid(
                "pc",
                "predictor",
                format!(
                    "`{}` is deterministic; the predictor must be a stochastic solver (ddpm(), ddim(eta: 1.0), euler_maruyama(), reverse_diffusion())",
                    p.predictor.name()
                ),
            ));
        }
        if p.corrector_steps == 0 {
            return Err(Error::invalid(
                "pc",
                "corrector_steps",
                "must be at least 1 (with none, use the predictor itself as the solver)",
            ));
        }
        Ok(Self {
            predictor_name: p.predictor.name(),
            predictor,
            corrector_steps: p.corrector_steps,
            snr: corrector_snr("pc", p.snr)?,
            step_size: p.step_size,
        })
    }

    /// The predictor's registered name.
    pub fn predictor_name(&self) -> &'static str {
        self.predictor_name
    }

    /// One Langevin step at `to` from `x`, with a = α_{t|s}².
    fn langevin(&self, ctx: &StepContext<'_>, state: &State, a: f64) -> Result<Tensor> {
        let to = &ctx.to;
        let r2 = self.snr * self.snr;
        match self.step_size {
            StepSize::ExpectedNorm => ctx.langevin(state, 2.0 * a * r2 * to.sigma * to.sigma),
            StepSize::PerSampleNorm => {
                let score = ctx.eval(&state.x, to)?.score()?;
                let z = ctx.standard_normal(state)?;
                let rows = state.rows()?;
                let flat = |t: &Tensor| t.reshape((rows, ()));
                let sq_norm =
                    |t: &Tensor| -> Result<Tensor> { Ok(flat(t)?.sqr()?.sum_keepdim(D::Minus1)?) };
                // ε_i = 2 a r² ‖z_i‖²/‖ŝ_i‖², per row.
                let eps = sq_norm(&z)?
                    .div(&sq_norm(&score)?)?
                    .affine(2.0 * a * r2, 0.0)?;
                let x = flat(&state.x)?
                    .add(&flat(&score)?.broadcast_mul(&eps)?)?
                    .add(&flat(&z)?.broadcast_mul(&eps.affine(2.0, 0.0)?.sqrt()?)?)?;
                Ok(x.reshape(state.x.shape())?)
            }
        }
    }
}

impl Solver for Pc {
    fn claims(&self) -> SolverClaims {
        let p = self.predictor.claims();
        SolverClaims {
            order: Order::Plateau { snr: self.snr },
            nfe_per_step: p.nfe_per_step + self.corrector_steps,
            stochastic: true,
            affine: p.affine && self.step_size == StepSize::ExpectedNorm,
            equation: Equation::ReverseSde,
            natural_grid: p.natural_grid,
        }
    }

    fn default_discretization(&self, sde: &dyn ForwardSde) -> Discretization {
        let grid = self.predictor.default_discretization(sde).grid;
        let steps = (DEFAULT_BUDGET / self.claims().nfe_per_step).max(1);
        Discretization { steps, grid }
    }

    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let a = Transition::between(&ctx.from, &ctx.to).alpha.powi(2);
        let mut state = self.predictor.step(ctx, state)?.state;
        for _ in 0..self.corrector_steps {
            let x = self.langevin(ctx, &state, a)?;
            state = state.with_x(x);
        }
        Ok(Step::to(state))
    }
}

register_solver!(
    "pc",
    "Predictor–corrector: a stochastic predictor, then batch-free Langevin steps (plateaus)",
    Params,
    Pc::new,
    variants: ["(predictor: ddpm())"]
);
