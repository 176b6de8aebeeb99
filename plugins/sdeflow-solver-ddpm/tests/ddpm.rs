//! DDPM's ancestral step against MATH.md §5: the posterior q(x_s | x_t, x̂₀)'s mean and
//! standard deviation in closed form on the OU SDE, noise on every step (the last included),
//! direction checks, claims and the registration.

use std::sync::Arc;

use sdeflow_kernel::{
    Discretization, Equation, Error, ForwardSde, GridKind, Order, Result, RunContext, Solver,
    SolverClaims, State, StepSpan,
    noise::{ConstantNoise, PhiloxNoise},
    testing::{Gaussian, Ou, assert_close, normals, one_step, rows},
};
use sdeflow_solver_ddpm::Ddpm;

/// Step pairs t → s: large, moderate, near t_ε, and s ≈ t (where σ_t² − α_{t|s}² σ_s² cancels).
const PAIRS: [(f64, f64); 4] = [(1.0, 0.7), (0.6, 0.55), (0.01, 1e-3), (0.5, 0.5 - 1e-7)];

/// The step with z = 0 is the posterior mean (α_{t|s} σ_s²/σ_t²) x_t + (α_s σ²_{t|s}/σ_t²) x̂₀,
/// the step with z = 1 minus it is σ_{t|s} σ_s/σ_t, with the OU closed forms
/// α_{t|s} = e^{−(t−s)}, σ²_{t|s} = −expm1(−2(t − s)); with Philox noise the step is
/// mean + std · z for the z the context draws. One NFE, one draw per coordinate. All to 1e-12.
#[test]
fn step_samples_the_posterior() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(2, 5, 2)?;
    for (t, s) in PAIRS {
        let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
        let a_ts = (-(t - s)).exp();
        let var_ts = -(-2.0 * (t - s)).exp_m1();
        let (s2t, s2s) = (ct.sigma * ct.sigma, cs.sigma * cs.sigma);
        let std = (var_ts * s2s / s2t).sqrt();
        let mean: Vec<Vec<f64>> = rows(&x)?
            .iter()
            .map(|r| {
                let f = |(j, &xt): (usize, &f64)| {
                    a_ts * s2s / s2t * xt + cs.alpha * var_ts / s2t * model.x0(xt, j, &ct)
                };
                r.iter().enumerate().map(f).collect()
            })
            .collect();
        let what = format!("t = {t}, s = {s}");
        let zero = one_step(&Ddpm, &Ou, &model, &ConstantNoise(0.0), &x, t, s)?;
        let one = one_step(&Ddpm, &Ou, &model, &ConstantNoise(1.0), &x, t, s)?;
        assert_eq!((zero.nfe, zero.draws, zero.draw_calls), (1, 2, 1), "{what}");
        assert_close(&rows(&zero.x)?, &mean, 1e-12, &format!("mean, {what}"));
        let shifted: Vec<Vec<f64>> = mean
            .iter()
            .map(|r| r.iter().map(|m| m + std).collect())
            .collect();
        assert_close(&rows(&one.x)?, &shifted, 1e-12, &format!("std, {what}"));
        let philox = one_step(&Ddpm, &Ou, &model, &PhiloxNoise, &x, t, s)?;
        let den = model.denoiser();
        let ctx = RunContext::new(&Ou, &den, &PhiloxNoise, 5).step(StepSpan {
            from: ct,
            to: cs,
            step: 3,
            steps: 10,
        });
        let z = rows(&ctx.standard_normal(&State::new(x.clone(), t, 0))?)?;
        let want: Vec<Vec<f64>> = mean
            .iter()
            .zip(&z)
            .map(|(m, z)| m.iter().zip(z).map(|(m, z)| m + std * z).collect())
            .collect();
        assert_close(&rows(&philox.x)?, &want, 1e-12, &format!("philox, {what}"));
    }
    Ok(())
}

/// The last step draws noise too (dropping it is the pipeline's Tweedie step, not DDPM's).
#[test]
fn last_step_draws_noise() -> Result<()> {
    let model = Gaussian::default();
    let den = model.denoiser();
    let (ct, cs) = (Ou.coefs(0.01), Ou.coefs(Ou.t_eps()));
    let ctx = RunContext::new(&Ou, &den, &ConstantNoise(1.0), 5).step(StepSpan {
        from: ct,
        to: cs,
        step: 9,
        steps: 10,
    });
    assert!(ctx.is_last());
    let x = normals(3, 3, 2)?;
    Ddpm.step(&ctx, &State::new(x, ct.t, 0))?;
    assert_eq!((ctx.draw_calls(), ctx.draws_taken()), (1, 2));
    Ok(())
}

/// A step away from the data (λ_s < λ_t) is an error naming the grid, not a NaN.
#[test]
fn step_away_from_the_data_is_an_error() -> Result<()> {
    let x = normals(4, 2, 2)?;
    let err = one_step(
        &Ddpm,
        &Ou,
        &Gaussian::default(),
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
        natural_grid: GridKind::LogSnr,
    };
    assert_eq!(Ddpm.claims(), want);
    assert_eq!(
        Ddpm.default_discretization(&Ou),
        Discretization {
            steps: 1000,
            grid: Ou.default_grid()
        }
    );
}

/// The registration: `ddpm()` builds, unknown fields are rejected.
#[test]
fn registration() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    let built: Arc<dyn Solver> = reg.solver("ddpm", "()")?;
    assert_eq!(built.claims(), Ddpm.claims());
    assert!(reg.solver("ddpm", "(eta: 1.0)").is_err());
    Ok(())
}
