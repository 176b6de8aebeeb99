//! Euler–Maruyama on the reverse-time SDE, with noise on every step.
//!
//! # Formula
//! MATH.md §2 and §5: the reverse SDE dx = [f x − g² ŝ] dt + g dw̄ stepped from t to s < t
//! with h = t − s and the coefficients at t:
//! `x_s = x_t − (f x_t − g² ŝ(x_t, t)) h + g √h z`, z ~ N(0, I) on every step, the last
//! included (dropping it halves the strong order; the Tweedie denoise is a separate, counted
//! step of the pipeline).
//!
//! # Parameters
//! None: `euler_maruyama()`.
//!
//! # Claims
//! Weak order 1; strong order 1 (the noise is additive: g depends on t only); 1 NFE per step;
//! stochastic; affine in x for an affine score; integrates the reverse SDE. The order is
//! claimed on the quadratic grid, where every built-in SDE is in its asymptotic regime by
//! N = 1,024 (on VE's uniform grid the weak error is smaller but falls faster than first order
//! until N ≈ 16k, and a tail fit there reads 1.56). Default: 1,000 steps on the SDE's default
//! grid (uniform in t for VP, Karras for EDM).
//!
//! # References
//! Kloeden & Platen, "Numerical Solution of Stochastic Differential Equations", 1992, §10.2
//! and §14.1; Song et al., ICLR 2021, Appendix D ("Euler–Maruyama").

use sdeflow_kernel::{
    Discretization, Equation, ForwardSde, GridKind, Order, Result, Solver, SolverClaims, State,
    Step, StepContext, ops::lin3, register_solver,
};
use serde::{Deserialize, Serialize};

/// Euler–Maruyama has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

/// Euler–Maruyama on the reverse SDE.
#[derive(Debug, Clone, Copy, Default)]
pub struct EulerMaruyama;

impl Solver for EulerMaruyama {
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
        let c = &ctx.from;
        let h = ctx.h();
        let score = ctx.eval(&state.x, c)?.score()?;
        let z = ctx.standard_normal(state)?;
        let x = lin3(
            1.0 - c.f * h,
            &state.x,
            c.g2 * h,
            &score,
            (c.g2 * h).sqrt(),
            &z,
        )?;
        Ok(Step::to(state.with_x(x)))
    }
}

register_solver!(
    "euler_maruyama",
    "Euler–Maruyama on the reverse SDE: weak and strong order 1",
    Params,
    |_: Params| { Ok(EulerMaruyama) }
);
