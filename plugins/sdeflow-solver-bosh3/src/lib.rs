//! Bogacki–Shampine 3(2) on the probability-flow ODE, with every sample on its own adaptive
//! steps.
//!
//! # Formula
//! MATH.md §2 and §6: the PF-ODE dx/dt = F(x, t) = f x − ½ g² ŝ(x, t) (with the log-density
//! change Δ' = f D − ½ g² ∇·ŝ beside it when computing a likelihood), stepped by the
//! four-stage pair of [`TABLEAU`]: `c = [0, ½, ¾, 1]`, `a = [[], [½], [0, ¾], [2/9, ⅓, 4/9]]`,
//! the order-3 weights `b = [2/9, ⅓, 4/9, 0]` carried forward and the order-2 weights
//! `b̂ = [7/24, ¼, ⅓, ⅛]` for the error estimate e = h Σ (b_i − b̂_i) k_i. The last stage is
//! evaluated at (y_end, t + h) (first-same-as-last): 3 NFE per attempt after the first —
//! cheaper than `dopri5` per step, for loose tolerances.
//!
//! The kernel's adaptive loop runs it (see `dopri5`): per-sample weighted RMS error norms
//! over x (and Δ), the PI controller of MATH.md §9 for an order-2 estimate (k = 3:
//! β₁ = 0.7/3, β₂ = 0.4/3, safety 0.9, factors in [0.2, 5]), Hairer's starting step (2 NFE).
//!
//! # Parameters
//! `bosh3(rtol: 1e-5, atol: 1e-5, min_step: 1e-10, max_nfe: 20000, first_step: None)`
//! ([`AdaptiveParams`]). A config that sets `steps:` or `grid:` beside it is an error.
//!
//! # Claims
//! Order 3 (the solution carried); 3 NFE per attempted step (FSAL); deterministic; not
//! affine; integrates the PF-ODE, and a likelihood forward. Conformance checks the same
//! contracts as `dopri5`'s: NFE counted equals reported, error ∝ rtol, finite for rtol
//! 1e-1 to 1e-10, batch invariance, the oracle's exact likelihood.
//!
//! # References
//! Bogacki & Shampine, "A 3(2) pair of Runge–Kutta formulas", Appl. Math. Lett. 2, 1989
//! (MATLAB's `ode23`, scipy's `RK23`); Hairer, Nørsett & Wanner, "Solving Ordinary
//! Differential Equations I", 2nd ed., 1993, §II.4.

pub use sdeflow_kernel::AdaptiveParams;
use sdeflow_kernel::{
    register_solver,
    rk::{ButcherTableau, Embedded, RkSolver},
};

/// Bogacki & Shampine's 3(2) pair.
pub const TABLEAU: ButcherTableau = ButcherTableau {
    name: "bosh3",
    a: &[
        &[],
        &[1.0 / 2.0],
        &[0.0, 3.0 / 4.0],
        &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0],
    ],
    b: &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0, 0.0],
    c: &[0.0, 0.5, 0.75, 1.0],
    order: 3,
    embedded: Some(Embedded {
        b: &[7.0 / 24.0, 1.0 / 4.0, 1.0 / 3.0, 1.0 / 8.0],
        order: 2,
    }),
};

register_solver!(
    "bosh3",
    "Bogacki–Shampine 3(2) on the PF-ODE, adaptive per sample (rtol, atol): order 3, 3 NFE per attempt",
    AdaptiveParams,
    |p: AdaptiveParams| RkSolver::adaptive(&TABLEAU, &p)
);
