//! DDIM(η) against MATH.md §5: at η = 0 the first-order exponential integrator (pathwise order
//! 1 on λ-uniform grids, no noise drawn), at η = 1 DDPM's posterior sample, for any η the
//! noise coefficient c = η σ_s σ_{t|s}/σ_t; parameters, claims and the registration.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use sdeflow_kernel::{
    Discretization, Equation, Error, ForwardSde, GridKind, Order, Pipeline, Result, RunContext,
    Solver, SolverClaims, State, StepSpan,
    noise::{ConstantNoise, NoiseSource, PhiloxNoise},
    testing::{
        Gaussian, NoNoise, Ou, assert_close, gaussian_pipeline, normals, one_step, pathwise_errors,
        rows, tail_order,
    },
};
use sdeflow_solver_ddim::{Ddim, Params};

fn ddim(eta: f64) -> Result<Ddim> {
    Ddim::new(Params { eta })
}

/// Step pairs t → s: large, moderate, near t_ε, and s ≈ t (where σ_t² − α_{t|s}² σ_s² cancels).
const PAIRS: [(f64, f64); 4] = [(1.0, 0.7), (0.6, 0.55), (0.01, 1e-3), (0.5, 0.5 - 1e-7)];

/// η = 0 is the exponential integrator x_s = (σ_s/σ_t) x_t + α_s (1 − e^{−h}) x̂₀ (MATH.md §5),
/// with x̂₀ in closed form: the DDIM form α_s x̂₀ + σ_s ε̂ agrees with it to 1e-12, one NFE, no draw.
#[test]
fn eta_zero_is_the_first_order_exponential_integrator() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(1, 6, 2)?;
    for (t, s) in PAIRS {
        let step = one_step(&ddim(0.0)?, &Ou, &model, &NoNoise, &x, t, s)?;
        assert_eq!((step.draws, step.nfe), (0, 1));
        let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
        let h = cs.lambda - ct.lambda;
        let want: Vec<Vec<f64>> = rows(&x)?
            .iter()
            .map(|r| {
                let f = |(j, &xt): (usize, &f64)| {
                    cs.sigma / ct.sigma * xt - cs.alpha * (-h).exp_m1() * model.x0(xt, j, &ct)
                };
                r.iter().enumerate().map(f).collect()
            })
            .collect();
        assert_close(&rows(&step.x)?, &want, 1e-12, &format!("t = {t}, s = {s}"));
    }
    Ok(())
}

/// η = 1 is DDPM's posterior q(x_s | x_t, x̂₀) (MATH.md §5): the step with z = 0 is its mean
/// (α_{t|s} σ_s²/σ_t²) x_t + (α_s σ²_{t|s}/σ_t²) x̂₀, the step with z = 1 minus it is its
/// standard deviation σ_{t|s} σ_s/σ_t, with σ²_{t|s} = −expm1(−2(t − s)) (the OU closed form);
/// with Philox noise the step is mean + std · z for the z the context draws. All to 1e-12.
#[test]
fn eta_one_is_the_ddpm_posterior_sample() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(2, 5, 2)?;
    let solver = ddim(1.0)?;
    for (t, s) in PAIRS {
        let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
        let a_ts = ct.alpha / cs.alpha;
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
        let zero = one_step(&solver, &Ou, &model, &ConstantNoise(0.0), &x, t, s)?;
        let one = one_step(&solver, &Ou, &model, &ConstantNoise(1.0), &x, t, s)?;
        assert_eq!(zero.draws, model.mean.len() as u64);
        let what = format!("t = {t}, s = {s}");
        assert_close(&rows(&zero.x)?, &mean, 1e-12, &format!("mean, {what}"));
        for (a, b) in rows(&zero.x)?
            .iter()
            .flatten()
            .zip(rows(&one.x)?.iter().flatten())
        {
            assert!(
                ((b - a) - std).abs() <= 1e-12 * (1.0 + a.abs()),
                "std, {what}"
            );
        }
        // Shared noise: the Philox step is mean + std · z with the context's own z.
        let philox = one_step(&solver, &Ou, &model, &PhiloxNoise, &x, t, s)?;
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

/// For any η the noise coefficient is c = η σ_s σ_{t|s}/σ_t and the mean is
/// α_s x̂₀ + √(σ_s² − c²) ε̂ (MATH.md §5), with ε̂ = (x − α_t x̂₀)/σ_t; η = 2 is valid on a
/// step with η² (1 − e^{−2h}) ≤ 1 (here h ≈ 0.016) and rejected on a long one (h ≈ 0.66).
#[test]
fn noise_coefficient_for_any_eta() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(3, 4, 2)?;
    for (eta, t, s) in [(0.3, 0.8, 0.6), (0.7, 0.05, 0.02), (2.0, 0.5, 0.49)] {
        let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
        let var_ts = -(-2.0 * (t - s)).exp_m1();
        let c = eta * cs.sigma * var_ts.sqrt() / ct.sigma;
        let keep = (cs.sigma * cs.sigma - c * c).sqrt();
        let mean: Vec<Vec<f64>> = rows(&x)?
            .iter()
            .map(|r| {
                let f = |(j, &xt): (usize, &f64)| {
                    let x0 = model.x0(xt, j, &ct);
                    cs.alpha * x0 + keep * (xt - ct.alpha * x0) / ct.sigma
                };
                r.iter().enumerate().map(f).collect()
            })
            .collect();
        let zero = one_step(&ddim(eta)?, &Ou, &model, &ConstantNoise(0.0), &x, t, s)?;
        let one = one_step(&ddim(eta)?, &Ou, &model, &ConstantNoise(1.0), &x, t, s)?;
        assert_close(&rows(&zero.x)?, &mean, 1e-12, &format!("mean, eta = {eta}"));
        for (a, b) in rows(&zero.x)?
            .iter()
            .flatten()
            .zip(rows(&one.x)?.iter().flatten())
        {
            assert!(
                ((b - a) - c).abs() <= 1e-12 * (1.0 + a.abs()),
                "c, eta = {eta}"
            );
        }
    }
    let err = one_step(&ddim(2.0)?, &Ou, &model, &ConstantNoise(0.0), &x, 1.0, 0.5).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidParam { field, .. } if field == "eta"),
        "{err}"
    );
    Ok(())
}

/// η must be finite and ≥ 0; the error names `eta`.
#[test]
fn eta_is_validated() -> Result<()> {
    for eta in [-0.1, f64::NAN, f64::INFINITY] {
        let err = ddim(eta).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidParam { field, .. } if field == "eta"),
            "{err}"
        );
    }
    assert_eq!(ddim(0.0)?.eta(), 0.0);
    Ok(())
}

/// MATH.md §5 and the crate's `# Claims`.
#[test]
fn claims_and_default_schedule() -> Result<()> {
    let ode = SolverClaims {
        order: Order::Ode(1.0),
        nfe_per_step: 1,
        stochastic: false,
        affine: true,
        equation: Equation::ProbabilityFlowOde,
        natural_grid: GridKind::LogSnr,
    };
    assert_eq!(ddim(0.0)?.claims(), ode);
    let sde = SolverClaims {
        order: Order::Sde {
            weak: 1.0,
            strong: 1.0,
        },
        stochastic: true,
        equation: Equation::ReverseSde,
        ..ode
    };
    assert_eq!(ddim(1.0)?.claims(), sde);
    assert_eq!(ddim(0.2)?.claims(), sde);
    let (uniform_500, uniform_1000) = (
        Discretization {
            steps: 500,
            grid: GridKind::Uniform,
        },
        Discretization {
            steps: 1000,
            grid: GridKind::Uniform,
        },
    );
    assert_eq!(ddim(0.0)?.default_discretization(&Ou), uniform_500);
    assert_eq!(ddim(1.0)?.default_discretization(&Ou), uniform_1000);
    Ok(())
}

/// The `ddim` registration: `()` is η = 0, fields are checked, unknown fields rejected.
#[test]
fn registration() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    assert_eq!(reg.solver("ddim", "()")?.claims(), ddim(0.0)?.claims());
    assert_eq!(
        reg.solver("ddim", "(eta: 1.0)")?.claims(),
        ddim(1.0)?.claims()
    );
    assert!(reg.solver("ddim", "(eta: -1.0)").is_err());
    assert!(reg.solver("ddim", "(etta: 1.0)").is_err());
    Ok(())
}

fn pipeline(solver: Ddim, steps: usize, noise: Arc<dyn NoiseSource>) -> Result<Pipeline> {
    gaussian_pipeline(
        Arc::new(Ou),
        Arc::new(solver),
        GridKind::LogSnr,
        steps,
        noise,
    )
}

/// η = 0 through the pipeline on λ-uniform grids: the pathwise error at t_ε against the
/// closed-form PF-ODE flow map x_s = α_s m + √(v_s/v_t)(x_t − α_t m) falls at order 1
/// (tail fit ±0.25), NFE counted = steps, and no noise is ever asked for.
#[test]
fn eta_zero_converges_at_order_one_on_log_snr_grids() -> Result<()> {
    let steps = [16, 32, 64, 128, 256, 512, 1024];
    let errors = pathwise_errors(
        Arc::new(Ou),
        Arc::new(ddim(0.0)?),
        GridKind::LogSnr,
        &normals(4, 8, 2)?,
        &steps,
        |n, _, out| assert_eq!((out.nfe, out.state.draws), (n as u64, 0)),
    )?;
    let p = tail_order(&steps, &errors).expect("three errors above 1e-11");
    eprintln!("ddim(eta = 0) pathwise errors {errors:?}: order {p:.3}");
    assert!((p - 1.0).abs() <= 0.25, "order {p}, errors {errors:?}");
    Ok(())
}

/// η = 1 through the pipeline draws one normal per coordinate per step, counts one NFE per
/// step, and gives the same bits when run twice.
#[test]
fn eta_one_draws_once_per_step_and_reruns_identically() -> Result<()> {
    let x_t = normals(5, 3, 2)?;
    let p = pipeline(ddim(1.0)?, 20, Arc::new(PhiloxNoise))?;
    let a = p.run(State::new(x_t.clone(), 1.0, 0))?;
    let b = p.run(State::new(x_t, 1.0, 0))?;
    let dim = Gaussian::default().mean.len() as u64;
    assert_eq!((a.nfe, a.state.draws), (20, 20 * dim));
    let bits = |x: &Tensor| -> Result<Vec<u64>> {
        Ok(rows(x)?.iter().flatten().map(|v| v.to_bits()).collect())
    };
    assert_eq!(bits(&a.state.x)?, bits(&b.state.x)?);
    Ok(())
}

/// An f32 state stays f32 and agrees with the f64 step on the same input to f32 rounding.
#[test]
fn f32_state_stays_f32() -> Result<()> {
    let model = Gaussian::default();
    let noise = ConstantNoise(1.0);
    let x32 = normals(6, 4, 2)?.to_dtype(DType::F32)?;
    let xs32 = one_step(&ddim(0.5)?, &Ou, &model, &noise, &x32, 0.4, 0.3)?.x;
    assert_eq!(xs32.dtype(), DType::F32);
    let x64 = x32.to_dtype(DType::F64)?;
    let xs64 = one_step(&ddim(0.5)?, &Ou, &model, &noise, &x64, 0.4, 0.3)?.x;
    for (a, b) in rows(&xs32)?
        .iter()
        .flatten()
        .zip(rows(&xs64)?.iter().flatten())
    {
        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
    }
    Ok(())
}
