//! DPM-Solver++(2M): the second-order multistep exponential integrator of the PF-ODE in x̂₀.
//!
//! # Formula
//! MATH.md §5 (exponential integrators), a step t → s < t in λ = log(α/σ) with
//! h = λ_s − λ_t > 0 and x̂₀_now = x̂₀(x_t, t) from ONE model evaluation:
//! `x_s = (σ_s/σ_t) x_t − α_s expm1(−h) D`  (−expm1(−h) = 1 − e^{−h}, exact for small h), with
//! - `D = (1 + 1/(2r)) x̂₀_now − (1/(2r)) x̂₀_prev`, r = h_prev/h, h_prev = λ_t − λ_prev, when
//!   the state's history holds the previous evaluation (λ_prev, x̂₀_prev) and the step is
//!   neither the first nor the last;
//! - `D = x̂₀_now` on the first step (no history) and on the last step: there the step is
//!   DDIM(η = 0)'s, the first-order exponential integrator.
//!
//! The returned state's history is exactly `[(λ_t, x̂₀_now)]`, what the next step needs; the
//! input state is never changed (DESIGN.md "State is a value").
//!
//! # Parameters
//! None: `dpmpp_2m()`.
//!
//! # Claims
//! ODE order 2 on the probability-flow ODE, on the λ-uniform (log-SNR) grid; 1 NFE per step;
//! deterministic. Not a one-step affine map (the step reads the previous x̂₀), so it does not
//! claim `affine`: exact propagation of the weak error applies to one-step methods only.
//! Default: 100 λ-uniform steps (100 NFE).
//!
//! # References
//! Lu, Zhou, Bao, Chen, Li & Zhu, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
//! Probabilistic Models", 2022, Algorithm 2 (multistep second order, data prediction).

use sdeflow_kernel::{
    Discretization, Equation, ForwardSde, GridKind, HistoryEntry, Order, Result, Solver,
    SolverClaims, State, Step, StepContext,
    ops::{lin2, lin3},
    previous_evaluations, register_solver,
};
use serde::{Deserialize, Serialize};

/// DPM-Solver++(2M) has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// DPM-Solver++(2M).
#[derive(Debug, Clone, Copy, Default)]
pub struct DpmSolverPp2m;

impl Solver for DpmSolverPp2m {
    fn claims(&self) -> SolverClaims {
        SolverClaims {
            order: Order::Ode(2.0),
            nfe_per_step: 1,
            stochastic: false,
            affine: false,
            equation: Equation::ProbabilityFlowOde,
            natural_grid: GridKind::LogSnr,
        }
    }

    fn default_discretization(&self, _sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: 100,
            grid: GridKind::LogSnr,
        }
    }

    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let (from, to) = (&ctx.from, &ctx.to);
        let h = to.lambda - from.lambda;
        let x0_now = ctx.eval(&state.x, from)?.x0()?;
        let x_coef = to.sigma / from.sigma;
        let x0_coef = -to.alpha * (-h).exp_m1();
        let want = usize::from(ctx.step > 0 && !ctx.is_last());
        let prev = previous_evaluations(&state.history, from, want, false, "dpmpp_2m")?;
        let x = match prev.first() {
            Some(prev) => {
                let h_prev = from.lambda - prev.lambda;
                // D = (1 + k) x̂₀_now − k x̂₀_prev with k = 1/(2r) = h/(2 h_prev).
                let k = h / (2.0 * h_prev);
                let (a, b) = (x0_coef * (1.0 + k), -x0_coef * k);
                lin3(x_coef, &state.x, a, &x0_now, b, &prev.x0_hat)?
            }
            None => lin2(x_coef, &state.x, x0_coef, &x0_now)?,
        };
        let mut next = state.with_x(x);
        next.history = vec![HistoryEntry::x0(from, x0_now)];
        Ok(Step::to(next))
    }
}

register_solver!(
    "dpmpp_2m",
    "DPM-Solver++(2M): second-order multistep exponential integrator of the PF-ODE, 1 NFE per step",
    Params,
    |_: Params| Ok(DpmSolverPp2m)
);
