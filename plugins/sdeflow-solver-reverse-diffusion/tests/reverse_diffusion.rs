//! The reverse-diffusion predictor against MATH.md §5: x_s = (2 − α_{t|s}) x_t + σ²_{t|s} ŝ +
//! σ_{t|s} z with the OU closed forms, defined at any N (one step over the whole range
//! included), direction checks, claims and the registration.

use sdeflow_kernel::{
    Discretization, Equation, Error, ForwardSde, GridKind, Order, Pipeline, Result, Solver,
    SolverClaims, State,
    noise::ConstantNoise,
    testing::{EpsParam, Gaussian, Ou, assert_close, normals, one_step, rows},
};
use sdeflow_solver_reverse_diffusion::ReverseDiffusion;
use std::sync::Arc;

/// Step pairs t → s: large, moderate, near t_ε, and s ≈ t.
const PAIRS: [(f64, f64); 4] = [(1.0, 0.7), (0.6, 0.55), (0.01, 1e-3), (0.5, 0.5 - 1e-7)];

/// With z = 0 the step is (2 − α_{t|s}) x_t + σ²_{t|s} ŝ(x_t, t); z = 1 adds σ_{t|s}; OU:
/// α_{t|s} = e^{−(t−s)}, σ²_{t|s} = −expm1(−2(t − s)). One NFE, one draw per coordinate.
#[test]
fn step_matches_the_formula() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(5, 4, 2)?;
    for (t, s) in PAIRS {
        let ct = Ou.coefs(t);
        let a_ts = (-(t - s)).exp();
        let var_ts = -(-2.0 * (t - s)).exp_m1();
        let mean: Vec<Vec<f64>> = rows(&x)?
            .iter()
            .map(|r| {
                let f =
                    |(j, &xt): (usize, &f64)| (2.0 - a_ts) * xt + var_ts * model.score(xt, j, &ct);
                r.iter().enumerate().map(f).collect()
            })
            .collect();
        let what = format!("t = {t}, s = {s}");
        let zero = one_step(
            &ReverseDiffusion,
            &Ou,
            &model,
            &ConstantNoise(0.0),
            &x,
            t,
            s,
        )?;
        let one = one_step(
            &ReverseDiffusion,
            &Ou,
            &model,
            &ConstantNoise(1.0),
            &x,
            t,
            s,
        )?;
        assert_eq!((zero.nfe, zero.draws, zero.draw_calls), (1, 2, 1), "{what}");
        assert_close(&rows(&zero.x)?, &mean, 1e-12, &format!("mean, {what}"));
        let shifted: Vec<Vec<f64>> = mean
            .iter()
            .map(|r| r.iter().map(|m| m + var_ts.sqrt()).collect())
            .collect();
        assert_close(&rows(&one.x)?, &shifted, 1e-12, &format!("std, {what}"));
    }
    Ok(())
}

/// score_sde's β_i = β(t_i)/N breaks for N ≤ 20; the grid-interval form is finite at every N,
/// one step over the whole range included, and its NFE is one per step.
#[test]
fn finite_at_any_step_count() -> Result<()> {
    let x = normals(6, 64, 2)?;
    for steps in [1, 2, 3, 5, 10, 21] {
        let out = Pipeline::builder()
            .sde(Arc::new(Ou))
            .param(Arc::new(EpsParam))
            .model(Arc::new(Gaussian::default()))
            .solver(Arc::new(ReverseDiffusion))
            .steps(steps)
            .grid(GridKind::Uniform)
            .build()?
            .run(State::new(x.clone(), 1.0, 0))?;
        assert_eq!(out.nfe, steps as u64);
        assert!(rows(&out.state.x)?.iter().flatten().all(|v| v.is_finite()));
    }
    Ok(())
}

/// A step away from the data is an error naming the grid.
#[test]
fn step_away_from_the_data_is_an_error() -> Result<()> {
    let x = normals(7, 2, 2)?;
    let model = Gaussian::default();
    let err = one_step(
        &ReverseDiffusion,
        &Ou,
        &model,
        &ConstantNoise(0.0),
        &x,
        0.3,
        0.6,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidParam { field, .. } if field == "grid"),
        "{err}"
    );
    Ok(())
}

/// The crate's `# Claims`.
#[test]
fn claims_and_default_schedule() {
    let want = SolverClaims {
        order: Order::Sde {
            weak: 1.0,
            strong: 1.0,
        },
        nfe_per_step: 1,
        stochastic: true,
        affine: true,
        equation: Equation::ReverseSde,
        natural_grid: GridKind::Quadratic,
    };
    assert_eq!(ReverseDiffusion.claims(), want);
    assert_eq!(
        ReverseDiffusion.default_discretization(&Ou),
        Discretization {
            steps: 1000,
            grid: Ou.default_grid()
        }
    );
}

/// The registration: `reverse_diffusion()` builds; unknown fields are rejected.
#[test]
fn registration() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    assert_eq!(
        reg.solver("reverse_diffusion", "()")?.claims(),
        ReverseDiffusion.claims()
    );
    assert!(reg.solver("reverse_diffusion", "(snr: 0.1)").is_err());
    Ok(())
}
