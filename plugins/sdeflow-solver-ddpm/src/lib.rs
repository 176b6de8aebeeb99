//! DDPM's ancestral sampler: each step draws x_s from the posterior q(x_s | x_t, x̂₀).
//!
//! # Formula
//! MATH.md §5, a step t → s < t with x̂₀ read from one evaluation at (x_t, t) and the forward
//! transition α_{t|s} = α_t/α_s, σ²_{t|s} = σ_t² − α_{t|s}² σ_s² ([`Transition`]):
//! `x_s = (α_{t|s} σ_s²/σ_t²) x_t + (α_s σ²_{t|s}/σ_t²) x̂₀ + (σ_{t|s} σ_s/σ_t) z`,
//! z ~ N(0, I) on every step, the last included. With h = λ_s − λ_t the coefficients are
//! evaluated as `(σ_s/σ_t) e^{−h}`, `α_s (1 − e^{−2h})` and `σ_s sqrt(1 − e^{−2h})`
//! (1 − e^{−2h} = −expm1(−2h)), so nothing cancels on short steps. Valid for every linear
//! SDE, grid and step count; on the DDPM grid of `vp_discrete` it is Ho et al.'s sampler with
//! the posterior variance β̃.
//!
//! # Parameters
//! None: `ddpm()`.
//!
//! # Claims
//! Weak order 1 and strong order 1 on the reverse SDE (its noise is additive: the coefficient
//! of z depends on the grid only); 1 NFE per step; stochastic, one draw per coordinate per
//! step; affine in x for an affine score; the order is claimed on the λ-uniform (log-SNR)
//! grid. Equal in law to `ddim(eta: 1.0)`, and step for step with shared noise. Default:
//! 1,000 steps on the SDE's default grid.
//!
//! # References
//! Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020, eq. (6)–(7)
//! and Algorithm 2; Kingma et al., "Variational Diffusion Models", NeurIPS 2021, Appendix A
//! (the posterior for any α, σ).

use sdeflow_kernel::{
    Discretization, Equation, ForwardSde, GridKind, Order, Result, Solver, SolverClaims, State,
    Step, StepContext, Transition, ops::lin3, register_solver,
};
use serde::{Deserialize, Serialize};

/// DDPM has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// DDPM's ancestral sampler.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ddpm;

impl Solver for Ddpm {
    fn claims(&self) -> SolverClaims {
        SolverClaims {
            order: Order::Sde {
                weak: 1.0,
                strong: 1.0,
            },
            nfe_per_step: 1,
            stochastic: true,
            affine: true,
            equation: Equation::ReverseSde,
            natural_grid: GridKind::LogSnr,
        }
    }

    fn default_discretization(&self, sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: 1000,
            grid: sde.default_grid(),
        }
    }

    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let (from, to) = (&ctx.from, &ctx.to);
        let tr = Transition::toward_data("ddpm", from, to)?;
        let x0_hat = ctx.eval(&state.x, from)?.x0()?;
        let z = ctx.standard_normal(state)?;
        let x = lin3(
            to.sigma / from.sigma * (-tr.h).exp(),
            &state.x,
            to.alpha * tr.var_rel,
            &x0_hat,
            to.sigma * tr.var_rel.sqrt(),
            &z,
        )?;
        Ok(Step::to(state.with_x(x)))
    }
}

register_solver!(
    "ddpm",
    "DDPM's ancestral sampler: q(x_s | x_t, x̂₀) per step, any linear SDE",
    Params,
    |_: Params| Ok(Ddpm)
);
