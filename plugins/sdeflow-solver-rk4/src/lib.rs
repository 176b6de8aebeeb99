//! The classical fourth-order Runge–Kutta method on the probability-flow ODE.
//!
//! # Formula
//! MATH.md §2 and §5: the PF-ODE dx/dt = F(x, t) = f x − ½ g² ŝ(x, t) stepped from t to s < t
//! with h = t − s and m = (t + s)/2:
//! `k₁ = F(x_t, t)`, `k₂ = F(x_t − (h/2) k₁, m)`, `k₃ = F(x_t − (h/2) k₂, m)`,
//! `k₄ = F(x_t − h k₃, s)`, `x_s = x_t − (h/6)(k₁ + 2k₂ + 2k₃ + k₄)`.
//! It is the Butcher tableau [`TABLEAU`] (the kernel's `rk::RK4`, which a tuned grid's
//! reference solve also runs), `a = [[], [½], [0, ½], [0, 0, 1]]`, `b = [⅙, ⅓, ⅓, ⅙]`,
//! `c = [0, ½, ½, 1]`, run by the kernel's [`RkSolver`], which integrates in t; the midpoint
//! stages take the SDE's coefficients at m.
//!
//! # Parameters
//! None: `rk4()`.
//!
//! # Claims
//! Order 4 on a grid uniform in t; 4 NFE per step; deterministic; affine in x for an affine
//! score (one step, no history); integrates the PF-ODE. Default: 100 steps (400 NFE) on the
//! SDE's default grid.
//!
//! # References
//! Kutta, "Beitrag zur näherungsweisen Integration totaler Differentialgleichungen",
//! Z. Math. Phys. 46, 1901; Hairer, Nørsett & Wanner, "Solving Ordinary Differential
//! Equations I", 2nd ed., 1993, §II.1, Table 1.2; Song et al., ICLR 2021, §4.3 (the
//! probability flow ODE).

use sdeflow_kernel::{register_solver, rk::RkSolver};
use serde::{Deserialize, Serialize};

/// The classical RK4 tableau.
pub use sdeflow_kernel::rk::RK4 as TABLEAU;

/// RK4 has no parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {}

register_solver!(
    "rk4",
    "The classical Runge–Kutta method on the PF-ODE: order 4, 4 NFE per step",
    Params,
    |_: Params| RkSolver::new(&TABLEAU, 100)
);
