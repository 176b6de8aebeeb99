//! Heun's method (the explicit trapezoid rule) on the probability-flow ODE.
//!
//! # Formula
//! MATH.md §2 and §5: the PF-ODE dx/dt = F(x, t) = f x − ½ g² ŝ(x, t) stepped from t to s < t
//! with h = t − s, as in EDM's Algorithm 1 without churn:
//! `d = F(x_t, t)`, `x̃ = x_t − h d`, `d′ = F(x̃, s)`, `x_s = x_t − h (d + d′)/2`.
//! It is the Butcher tableau [`TABLEAU`], `a = [[], [1]], b = [½, ½], c = [0, 1]`, run by the
//! kernel's [`RkSolver`], which integrates in t. EDM's Algorithm 1 steps in σ̃ on x/α
//! and skips the second stage when σ̃_{i+1} = 0; here the grid ends at t_ε > 0, so every
//! step takes both stages, and the method equals EDM's only on the `edm` SDE (α = 1, σ = t).
//!
//! # Parameters
//! None: `heun()`.
//!
//! # Claims
//! Order 2 on a grid uniform in t; 2 NFE per step; deterministic; affine in x for an affine
//! score (one step, no history); integrates the PF-ODE. Default: 250 steps (500 NFE) on the
//! SDE's default grid.
//!
//! # References
//! Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative
//! Models", NeurIPS 2022, Algorithm 1; Hairer, Nørsett & Wanner, "Solving Ordinary
//! Differential Equations I", 2nd ed., 1993, §II.1 (Heun 1900); Song et al., ICLR 2021,
//! §4.3 (the probability flow ODE).

use sdeflow_kernel::{
    register_solver,
    rk::{ButcherTableau, RkSolver},
};
use serde::{Deserialize, Serialize};

/// Heun's tableau: the explicit trapezoid rule.
pub const TABLEAU: ButcherTableau = ButcherTableau {
    name: "heun",
    a: &[&[], &[1.0]],
    b: &[0.5, 0.5],
    c: &[0.0, 1.0],
    order: 2,
    embedded: None,
};

/// Heun's method has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

register_solver!(
    "heun",
    "Heun's method (explicit trapezoid) on the PF-ODE: order 2, 2 NFE per step",
    Params,
    |_: Params| RkSolver::new(&TABLEAU, 250)
);
