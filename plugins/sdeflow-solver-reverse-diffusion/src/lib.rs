//! The reverse-diffusion predictor of score_sde, defined from the grid interval.
//!
//! # Formula
//! MATH.md §5, a step t → s < t with ŝ read from one evaluation at (x_t, t) and the forward
//! transition α_{t|s} = α_t/α_s, σ²_{t|s} = σ_t² − α_{t|s}² σ_s² ([`Transition`], computed
//! as −σ_t² expm1(−2h), h = λ_s − λ_t):
//! `x_s = (2 − α_{t|s}) x_t + σ²_{t|s} ŝ(x_t, t) + σ_{t|s} z`, z ~ N(0, I) on every step.
//! On VP's DDPM grid this is score_sde's form (α_{t|s} = sqrt(1 − β_i), σ²_{t|s} = β_i), on VE
//! its SMLD form (x + (σ_t² − σ_s²) ŝ + sqrt(σ_t² − σ_s²) z). Unlike score_sde's
//! β_i = β(t_i)/N it is defined for any N ≥ 1, any grid and sub-VP.
//!
//! # Parameters
//! None: `reverse_diffusion()`.
//!
//! # Claims
//! Weak order 1 and strong order 1 on the reverse SDE (additive noise); 1 NFE per step;
//! stochastic, one draw per coordinate per step; affine in x for an affine score; the order is
//! claimed on the quadratic grid, as Euler–Maruyama's (both step in t with coefficients frozen
//! at the interval). Default: 1,000 steps on the SDE's default grid.
//!
//! # References
//! Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations",
//! ICLR 2021, eq. (46)–(47) and `ReverseDiffusionPredictor` in score_sde's `sampling.py`.

use sdeflow_kernel::{
    Discretization, Equation, ForwardSde, GridKind, Order, Result, Solver, SolverClaims, State,
    Step, StepContext, Transition, ops::lin3, register_solver,
};
use serde::{Deserialize, Serialize};

/// Reverse diffusion has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// The reverse-diffusion predictor.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReverseDiffusion;

impl Solver for ReverseDiffusion {
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
            natural_grid: GridKind::Quadratic,
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
        let tr = Transition::toward_data("reverse_diffusion", from, to)?;
        let score = ctx.eval(&state.x, from)?.score()?;
        let z = ctx.standard_normal(state)?;
        let x = lin3(2.0 - tr.alpha, &state.x, tr.var, &score, tr.std(), &z)?;
        Ok(Step::to(state.with_x(x)))
    }
}

register_solver!(
    "reverse_diffusion",
    "score_sde's reverse-diffusion predictor from the grid interval: any N, any grid",
    Params,
    |_: Params| Ok(ReverseDiffusion)
);
