//! Euler's method on the probability-flow ODE.
//!
//! # Formula
//! MATH.md §2 and §5: the PF-ODE dx/dt = F(x, t) = f x − ½ g² ŝ(x, t) stepped from t to s < t
//! with h = t − s and the drift at t: `x_s = x_t − h F(x_t, t)`. It is the one-stage Butcher
//! tableau [`TABLEAU`], `a = [[]], b = [1], c = [0]`, run by the kernel's [`RkSolver`],
//! which integrates in t. (Euler in λ on x/α is DDIM(η = 0), a different method.)
//!
//! # Parameters
//! None: `euler()`.
//!
//! # Claims
//! Order 1 on a grid uniform in t; 1 NFE per step; deterministic; affine in x for an affine
//! score (one step, no history); integrates the PF-ODE. Default: 1,000 steps on the SDE's
//! default grid.
//!
//! # References
//! Hairer, Nørsett & Wanner, "Solving Ordinary Differential Equations I", 2nd ed., 1993,
//! §I.7 and §II.1 (Euler 1768); Song et al., "Score-Based Generative Modeling through
//! Stochastic Differential Equations", ICLR 2021, §4.3 (the probability flow ODE).

use sdeflow_kernel::{
    register_solver,
    rk::{ButcherTableau, RkSolver},
};
use serde::{Deserialize, Serialize};

/// Euler's tableau: one stage at the step's start.
pub const TABLEAU: ButcherTableau = ButcherTableau {
    name: "euler",
    a: &[&[]],
    b: &[1.0],
    c: &[0.0],
    order: 1,
    embedded: None,
};

/// Euler's method has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

register_solver!(
    "euler",
    "Euler's method on the PF-ODE: order 1, 1 NFE per step",
    Params,
    |_: Params| RkSolver::new(&TABLEAU, 1000)
);
