//! Heun's method against the closed-form PF-ODE flow map of a single Gaussian
//! (MATH.md §7; DESIGN.md "Measuring sample quality honestly" (b)):
//! - one step equals EDM's Algorithm 1 without churn written out by hand;
//! - the pathwise error at t_ε falls at order 2 on a uniform grid;
//! - every step costs 2 NFE and draws no noise;
//! - the claims and defaults are as the crate states.
//!
//! The data law is [`Gaussian::default`], N((1, −0.5), 0.3² I) (s = 0.3, as DESIGN.md advises:
//! s = 1 under VP makes the flow a pure translation), on the OU SDE [`Ou`].

use std::sync::Arc;

use candle_core::{Device, Tensor};
use sdeflow_kernel::{
    Discretization, Equation, ForwardSde, GridKind, Order, Registry, Result, Solver, SolverClaims,
    noise::ConstantNoise,
    rk::RkSolver,
    testing::{FLOW_STARTS, Gaussian, Ou, flat, ode_flow_order, one_step},
};
use sdeflow_solver_heun::TABLEAU;

/// The solver as a config gets it: `heun()` from the registry.
fn registered() -> Result<Arc<dyn Solver>> {
    Registry::global()?.solver("heun", "()")
}

/// Model evaluations per step, as MATH.md §5 counts them.
const STAGES: u64 = 2;

/// One step from t to s (h = t − s) equals EDM's Algorithm 1 without churn on each coordinate:
/// /// `d = F(x, t)`, `x̃ = x − h d`, `d′ = F(x̃, s)`, `x_s = x − h (d + d′)/2` (MATH.md §5).
/// Both sides round a few terms of size ≤ |x| (1 + h |F|/|x|) ≲ 10 |x| here: 1e-14 of |x|.
#[test]
fn one_step_equals_the_hand_written_formula() -> Result<()> {
    let model = Gaussian::default();
    let solver = registered()?;
    let x = Tensor::new(&FLOW_STARTS, &Device::Cpu)?;
    for (t, s) in [(1.0, 0.9), (0.3, 0.05), (0.01, 1e-3)] {
        let h = t - s;
        let step = one_step(&*solver, &Ou, &model, &ConstantNoise(f64::NAN), &x, t, s)?;
        let got = flat(&step.x)?;
        assert_eq!((step.nfe, step.draws), (2, 0));
        let model = &model;
        let want = FLOW_STARTS.iter().flat_map(|row| {
            row.iter().enumerate().map(move |(j, &x)| {
                let f = |x: f64, t: f64| model.pf_ode_drift(x, j, &Ou.coefs(t));
                let d = f(x, t);
                let x_tilde = x - h * d;
                let d_prime = f(x_tilde, s);
                x - h * (d + d_prime) / 2.0
            })
        });
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-14 * w.abs().max(1.0),
                "t = {t}: {g} vs {w}"
            );
        }
    }
    Ok(())
}

/// The pathwise error at t_ε against the exact flow map over N = 16 … 1,024 uniform steps
/// falls at order 2 (tail fit within ±0.25, DESIGN.md "Orders"); the counted NFE is
/// 2 × N and no step draws noise ([`ode_flow_order`]).
#[test]
fn pathwise_error_falls_at_order_2() -> Result<()> {
    let (order, errors) = ode_flow_order(&*registered()?, STAGES)?;
    let shown: Vec<String> = errors.iter().map(|e| format!("{e:.3e}")).collect();
    println!(
        "Heun's method: N = 16 … 1024, errors [{}], tail order {order:.3}",
        shown.join(", ")
    );
    assert!(
        (order - 2.0).abs() <= 0.25,
        "order {order}, errors {errors:?}"
    );
    Ok(())
}

/// The crate's `# Claims`: order 2 on a uniform grid, 2 NFE per step, deterministic,
/// affine, the PF-ODE; 250 steps by default on the SDE's default grid.
#[test]
fn claims_and_default_schedule() -> Result<()> {
    let solver = registered()?;
    assert_eq!(
        solver.claims(),
        SolverClaims {
            order: Order::Ode(2.0),
            nfe_per_step: 2,
            stochastic: false,
            affine: true,
            equation: Equation::ProbabilityFlowOde,
            natural_grid: GridKind::Uniform,
        }
    );
    assert_eq!(
        solver.default_discretization(&Ou),
        Discretization {
            steps: 250,
            grid: Ou.default_grid()
        }
    );
    assert_eq!(TABLEAU.stages(), 2);
    TABLEAU.validate()
}

/// The `heun` registration builds from `()` and takes no fields.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    let reg = Registry::global()?;
    let solver = reg.solver("heun", "()")?;
    let built = RkSolver::new(&TABLEAU, solver.default_discretization(&Ou).steps)?;
    assert_eq!(solver.claims(), built.claims());
    assert!(reg.solver("heun", "(steps: 10)").is_err());
    Ok(())
}
