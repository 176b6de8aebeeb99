//! DPM-Solver++(2S): the second-order singlestep exponential integrator of the PF-ODE in x̂₀.
//!
//! # Formula
//! MATH.md §5 (exponential integrators), a step t → s < t in λ = log(α/σ) with
//! h = λ_s − λ_t > 0, through an intermediate time u with λ_u = λ_t + r h:
//! u = `ctx.sde.t_of_log_snr(λ_t + r h)`, its coefficients `ctx.coefs(u)`, and the ratio
//! actually reached, ρ = (λ_u − λ_t)/h (r up to the SDE's inversion), which must lie in (0, 1).
//! Two model evaluations:
//! - `m₀ = x̂₀(x_t, t)`;
//! - `x_u = (σ_u/σ_t) x_t + α_u (1 − e^{−ρh}) m₀` (DDIM(η = 0)'s step to u), `m_u = x̂₀(x_u, u)`;
//! - `x_s = (σ_s/σ_t) x_t + α_s (1 − e^{−h}) D`, `D = (1 − 1/(2ρ)) m₀ + (1/(2ρ)) m_u`.
//!
//! 1 − e^{−h} is evaluated as −expm1(−h). D matches the Taylor expansion
//! x̂₀(λ_t + v) ≈ m₀ + v x̂₀′ to the order the step needs: (m_u − m₀)/(2ρ) ≈ (h/2) x̂₀′, and
//! (1 − e^{−h}) (h/2) agrees with the exact weight h − 1 + e^{−h} of x̂₀′ to O(h³).
//! At r = ½ the step is k-diffusion's `sample_dpmpp_2s_ancestral` at η = 0 (D = m_u). Every
//! step, the first and the last included, is the same; the state carries no history.
//!
//! # Parameters
//! - `r`: where the intermediate point sits in λ, a fraction in (0, 1) of the step;
//!   ½ (the midpoint in λ) by default.
//!
//! # Claims
//! ODE order 2 on the probability-flow ODE, on the λ-uniform (log-SNR) grid; 2 NFE per step;
//! deterministic; affine in x for an affine score (one step, no history).
//! Default: 50 λ-uniform steps (100 NFE).
//!
//! # References
//! Lu, Zhou, Bao, Chen, Li & Zhu, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
//! Probabilistic Models", 2022, Algorithm 1 (singlestep second order, data prediction);
//! reference code github:LuChengTHU/dpm-solver `singlestep_dpm_solver_second_update` with
//! `algorithm_type="dpmsolver++"`, `solver_type="dpmsolver"`; Crowson, k-diffusion,
//! `sample_dpmpp_2s_ancestral` (r = ½, η = 0). Neither lowers the order at the first or the
//! last step, and neither does this solver.

use sdeflow_kernel::{
    Discretization, Equation, Error, ForwardSde, GridKind, Order, Result, Solver, SolverClaims,
    State, Step, StepContext,
    ops::{lin2, lin3},
    register_solver,
};
use serde::{Deserialize, Serialize};

/// DPM-Solver++(2S)'s parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The intermediate point's place in the step, a fraction of h in λ: in (0, 1).
    pub r: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self { r: 0.5 }
    }
}

/// DPM-Solver++(2S).
#[derive(Debug, Clone, Copy)]
pub struct DpmSolverPp2s {
    r: f64,
}

impl Default for DpmSolverPp2s {
    fn default() -> Self {
        Self { r: 0.5 }
    }
}

impl DpmSolverPp2s {
    /// Checks r: finite, strictly between 0 and 1.
    pub fn new(p: Params) -> Result<Self> {
        if !(p.r > 0.0 && p.r < 1.0) {
            return Err(Error::invalid(
                "dpmpp_2s",
                "r",
                format!(
                    "r = {} must lie strictly between 0 and 1 (the intermediate point's fraction \
                     of the step in λ; 0.5 is the midpoint)",
                    p.r
                ),
            ));
        }
        Ok(Self { r: p.r })
    }

    /// r.
    pub fn r(&self) -> f64 {
        self.r
    }
}

impl Solver for DpmSolverPp2s {
    fn claims(&self) -> SolverClaims {
        SolverClaims {
            order: Order::Ode(2.0),
            nfe_per_step: 2,
            stochastic: false,
            affine: true,
            equation: Equation::ProbabilityFlowOde,
            natural_grid: GridKind::LogSnr,
        }
    }

    fn default_discretization(&self, _sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: 50,
            grid: GridKind::LogSnr,
        }
    }

    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let (from, to) = (&ctx.from, &ctx.to);
        let h = to.lambda - from.lambda;
        let mid = ctx.coefs(ctx.sde.t_of_log_snr(from.lambda + self.r * h));
        let rho = (mid.lambda - from.lambda) / h;
        if !(h > 0.0 && h.is_finite() && rho > 0.0 && rho < 1.0) {
            return Err(Error::invalid(
                "dpmpp_2s",
                "grid",
                format!(
                    "the step t = {:e} → s = {:e} (h = {h:e} in λ) has no intermediate point \
                     strictly inside it: λ_t + r h = {:e} maps to t = {:e}, at ρ = {rho:e} of the \
                     step; steps must go toward the data (λ_s > λ_t) within [t_ε, T]",
                    from.t,
                    to.t,
                    from.lambda + self.r * h,
                    mid.t
                ),
            ));
        }
        let x0_now = ctx.eval(&state.x, from)?.x0()?;
        let x_mid = lin2(
            mid.sigma / from.sigma,
            &state.x,
            -mid.alpha * (-rho * h).exp_m1(),
            &x0_now,
        )?;
        let x0_mid = ctx.eval(&x_mid, &mid)?.x0()?;
        let c = -to.alpha * (-h).exp_m1();
        let k = 1.0 / (2.0 * rho);
        let x = lin3(
            to.sigma / from.sigma,
            &state.x,
            c * (1.0 - k),
            &x0_now,
            c * k,
            &x0_mid,
        )?;
        Ok(Step::to(state.with_x(x)))
    }
}

register_solver!(
    "dpmpp_2s",
    "DPM-Solver++(2S): second-order singlestep exponential integrator of the PF-ODE, 2 NFE per step",
    Params,
    DpmSolverPp2s::new
);
