//! Dormand–Prince 5(4) on the probability-flow ODE, with every sample on its own adaptive
//! steps.
//!
//! # Formula
//! MATH.md §2 and §6: the PF-ODE dx/dt = F(x, t) = f x − ½ g² ŝ(x, t) (with the log-density
//! change Δ' = f D − ½ g² ∇·ŝ beside it when computing a likelihood), stepped by the
//! seven-stage pair of [`TABLEAU`]: the order-5 solution y + h Σ b_i k_i is carried forward,
//! and e = h Σ (b_i − b̂_i) k_i against the order-4 weights b̂ estimates its local error. The
//! last stage is evaluated at (y_end, t + h), so it is the next step's first
//! (first-same-as-last): 6 NFE per attempt after the first.
//!
//! The kernel's adaptive loop (`sdeflow_kernel::adaptive`) runs it: sample i accepts a step
//! when its weighted RMS error ‖e / (atol + rtol·max(|y|, |ŷ|))‖ over x (and Δ) is ≤ 1,
//! and chooses the next with the PI controller of MATH.md §9 (k = 5: β₁ = 0.7/k = 0.14,
//! β₂ = 0.4/k = 0.08, safety 0.9, factors in [0.2, 5], no growth right after a rejection);
//! the first step is Hairer's starting-step algorithm (2 NFE).
//! No sample's steps depend on another's.
//!
//! # Parameters
//! `dopri5(rtol: 1e-5, atol: 1e-5, min_step: 1e-10, max_nfe: 20000, first_step: None)`
//! ([`AdaptiveParams`]; score_sde's tolerances). Steps and grids are the solver's own: a
//! config that sets `steps:` or `grid:` beside it is an error.
//!
//! # Claims
//! Order 5 (the solution carried); 6 NFE per attempted step (FSAL); deterministic; not
//! affine (its steps depend on x); integrates the PF-ODE, and a likelihood forward.
//! Conformance checks: NFE counted per sample and in total equals the run's report; the
//! global error falls in proportion to rtol (log-log slope within 0.2 of 1) on the oracle's
//! PF-ODE; finite for rtol from 1e-1 to 1e-10; a sample takes the same steps in any batch;
//! the exact likelihood of the oracle within 1e-3 nats/dim at rtol 1e-6.
//!
//! # References
//! Dormand & Prince, "A family of embedded Runge–Kutta formulae", J. Comput. Appl. Math. 6,
//! 1980; Hairer, Nørsett & Wanner, "Solving Ordinary Differential Equations I", 2nd ed.,
//! 1993, §II.4 (step-size control, starting step) and §II.5, Table 5.2 (the tableau);
//! Song et al., ICLR 2021, §4.3 and App. D (the PF-ODE sampled and its likelihood computed
//! with RK45, rtol = atol = 1e-5).

pub use sdeflow_kernel::AdaptiveParams;
use sdeflow_kernel::{
    register_solver,
    rk::{ButcherTableau, Embedded, RkSolver},
};

/// Dormand & Prince's 5(4) pair (Hairer, Nørsett & Wanner I, Table 5.2).
pub const TABLEAU: ButcherTableau = ButcherTableau {
    name: "dopri5",
    a: &[
        &[],
        &[1.0 / 5.0],
        &[3.0 / 40.0, 9.0 / 40.0],
        &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
        &[
            19372.0 / 6561.0,
            -25360.0 / 2187.0,
            64448.0 / 6561.0,
            -212.0 / 729.0,
        ],
        &[
            9017.0 / 3168.0,
            -355.0 / 33.0,
            46732.0 / 5247.0,
            49.0 / 176.0,
            -5103.0 / 18656.0,
        ],
        &[
            35.0 / 384.0,
            0.0,
            500.0 / 1113.0,
            125.0 / 192.0,
            -2187.0 / 6784.0,
            11.0 / 84.0,
        ],
    ],
    b: &[
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
        0.0,
    ],
    c: &[0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0],
    order: 5,
    embedded: Some(Embedded {
        b: &[
            5179.0 / 57600.0,
            0.0,
            7571.0 / 16695.0,
            393.0 / 640.0,
            -92097.0 / 339200.0,
            187.0 / 2100.0,
            1.0 / 40.0,
        ],
        order: 4,
    }),
};

register_solver!(
    "dopri5",
    "Dormand–Prince 5(4) on the PF-ODE, adaptive per sample (rtol, atol): order 5, 6 NFE per attempt",
    AdaptiveParams,
    |p: AdaptiveParams| RkSolver::adaptive(&TABLEAU, &p)
);
