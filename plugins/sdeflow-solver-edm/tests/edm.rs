//! EDM's sampler against Karras et al.'s Algorithm 2 written out in x̃ = x/α, σ̃ = σ/α (the
//! crate's `# Formula`) on the OU SDE with the exact x̂₀ of a Gaussian
//! (sdeflow_kernel::testing): Heun in σ̃ with two NFE, the last step Euler with one, churn with
//! its noise read through constant noise 0 and 1, churn confined to [S_min, S_max] and capped
//! at T; 2N − 1 NFE through the pipeline; parameters, claims, registration.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use sdeflow_kernel::{
    Discretization, Equation, ForwardSde, GridKind, Order, Pipeline, Result, RunContext, Solver,
    SolverClaims, State, StepSpan, TimeCoefs,
    noise::{ConstantNoise, NoiseSource},
    testing::{EpsParam, Gaussian, NoNoise, Ou, assert_close, normals, rows},
};
use sdeflow_solver_edm::{Edm, Params};

/// What one step returned and cost.
struct Out {
    x: Vec<Vec<f64>>,
    nfe: u64,
    draw_calls: u64,
}

/// One step t → s, step `step` of `steps`, reading [`Gaussian::default`] through ε.
fn step(
    solver: &Edm,
    noise: &dyn NoiseSource,
    x: &Tensor,
    (t, s): (f64, f64),
    (step, steps): (usize, usize),
) -> Result<Out> {
    let den = Gaussian::default().denoiser();
    let ctx = RunContext::new(&Ou, &den, noise, 5).step(StepSpan {
        from: Ou.coefs(t),
        to: Ou.coefs(s),
        step,
        steps,
    });
    let next = solver.step(&ctx, &State::new(x.clone(), t, 0))?.state;
    Ok(Out {
        x: rows(&next.x)?,
        nfe: den.nfe(),
        draw_calls: ctx.draw_calls(),
    })
}

/// Algorithm 2 in x̃ for one coordinate: churn to `hat` (σ̂ = σ̃(t̂)) with the added noise
/// `sqrt(σ̂² − σ̃_t²) s_noise z`, an Euler step, then Heun's correction unless `last`.
fn algorithm_2(
    x: f64,
    j: usize,
    (from, hat, to): (&TimeCoefs, &TimeCoefs, &TimeCoefs),
    s_noise_z: f64,
    last: bool,
) -> f64 {
    let model = Gaussian::default();
    let denoise = |xt: f64, c: &TimeCoefs| model.x0(c.alpha * xt, j, c);
    let (sigma_t, sigma_hat, sigma_s) = (from.sigma_tilde(), hat.sigma_tilde(), to.sigma_tilde());
    let x_hat = x / from.alpha + (sigma_hat.powi(2) - sigma_t.powi(2)).sqrt() * s_noise_z;
    let d = (x_hat - denoise(x_hat, hat)) / sigma_hat;
    let x_euler = x_hat + (sigma_s - sigma_hat) * d;
    let x_next = if last {
        x_euler
    } else {
        let d_prime = (x_euler - denoise(x_euler, to)) / sigma_s;
        x_hat + (sigma_s - sigma_hat) * 0.5 * (d + d_prime)
    };
    to.alpha * x_next
}

fn want(
    x: &Tensor,
    coefs: (&TimeCoefs, &TimeCoefs, &TimeCoefs),
    nz: f64,
    last: bool,
) -> Result<Vec<Vec<f64>>> {
    Ok(rows(x)?
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, &v)| algorithm_2(v, j, coefs, nz, last))
                .collect()
        })
        .collect())
}

fn edm(s_churn: f64, s_min: f64, s_max: f64, s_noise: f64) -> Result<Edm> {
    Edm::new(Params {
        s_churn,
        s_min,
        s_max,
        s_noise,
    })
}

/// Without churn a step is Heun in σ̃ on x/α (Algorithm 1): two NFE, nothing drawn; the last
/// step is Euler, one NFE.
#[test]
fn deterministic_step_is_heun_in_sigma_tilde() -> Result<()> {
    let x = normals(1, 4, 2)?;
    for (t, s) in [(1.0, 0.7), (0.3, 0.29), (0.01, 0.001)] {
        let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
        let out = step(&Edm::default(), &NoNoise, &x, (t, s), (3, 10))?;
        assert_eq!((out.nfe, out.draw_calls), (2, 0));
        let w = want(&x, (&ct, &ct, &cs), 0.0, false)?;
        assert_close(&out.x, &w, 1e-12, &format!("heun t = {t}, s = {s}"));
        let last = step(&Edm::default(), &NoNoise, &x, (t, s), (9, 10))?;
        assert_eq!((last.nfe, last.draw_calls), (1, 0));
        let w = want(&x, (&ct, &ct, &cs), 0.0, true)?;
        assert_close(&last.x, &w, 1e-12, &format!("euler t = {t}, s = {s}"));
    }
    Ok(())
}

/// With churn, γ = min(S_churn/N, √2 − 1): σ̂ = σ̃_t (1 + γ), the model is evaluated at the time
/// t̂ with σ̃(t̂) = σ̂, and z enters with sqrt(σ̂² − σ̃_t²) S_noise: one draw, two NFE (one on
/// the last step).
#[test]
fn churn_step_matches_algorithm_2() -> Result<()> {
    let x = normals(2, 4, 2)?;
    let (t, s) = (0.5, 0.4);
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    // S_churn 2 over 10 steps: γ = 0.2; S_churn 40: γ = √2 − 1.
    for (s_churn, gamma) in [(2.0, 0.2), (40.0, std::f64::consts::SQRT_2 - 1.0)] {
        let hat = Ou.coefs(Ou.t_of_log_snr(-(ct.sigma_tilde() * (1.0 + gamma)).ln()));
        assert!((hat.sigma_tilde() / ct.sigma_tilde() - 1.0 - gamma).abs() < 1e-12);
        let solver = edm(s_churn, 0.0, f64::INFINITY, 1.003)?;
        for z in [0.0, 1.0] {
            for (i, last) in [(3, false), (9, true)] {
                let out = step(&solver, &ConstantNoise(z), &x, (t, s), (i, 10))?;
                assert_eq!(out.draw_calls, 1);
                assert_eq!(out.nfe, if last { 1 } else { 2 });
                let w = want(&x, (&ct, &hat, &cs), 1.003 * z, last)?;
                assert_close(&out.x, &w, 1e-12, &format!("γ {gamma}, z {z}, last {last}"));
            }
        }
    }
    Ok(())
}

/// Churn only where S_min ≤ σ̃_t ≤ S_max, and never above σ̃(T): the first step, at T, draws
/// nothing and equals the deterministic step.
#[test]
fn churn_is_confined_and_capped() -> Result<()> {
    let x = normals(3, 4, 2)?;
    let (t, s) = (0.5, 0.4);
    let sigma_t = Ou.coefs(t).sigma_tilde();
    let plain = step(&Edm::default(), &NoNoise, &x, (t, s), (3, 10))?.x;
    for (lo, hi) in [(1.1 * sigma_t, 50.0), (0.0, 0.9 * sigma_t)] {
        let out = step(&edm(10.0, lo, hi, 1.0)?, &NoNoise, &x, (t, s), (3, 10))?;
        assert_eq!(out.draw_calls, 0);
        assert_eq!(out.x, plain);
    }
    let top = step(
        &edm(10.0, 0.0, f64::INFINITY, 1.0)?,
        &NoNoise,
        &x,
        (1.0, 0.9),
        (0, 10),
    )?;
    let plain = step(&Edm::default(), &NoNoise, &x, (1.0, 0.9), (0, 10))?;
    assert_eq!((top.draw_calls, top.nfe), (0, 2));
    assert_eq!(top.x, plain.x);
    Ok(())
}

/// N steps cost 2N − 1 NFE, which the pipeline counts.
#[test]
fn nfe_is_two_n_minus_one() -> Result<()> {
    assert_eq!(Edm::default().nfe(1), 1);
    assert_eq!(Edm::default().nfe(18), 35);
    for (solver, noise) in [
        (Edm::default(), Arc::new(NoNoise) as Arc<dyn NoiseSource>),
        (
            edm(5.0, 0.0, f64::INFINITY, 1.0)?,
            Arc::new(ConstantNoise(0.5)),
        ),
    ] {
        for n in [1, 2, 7] {
            let out = Pipeline::builder()
                .sde(Arc::new(Ou))
                .param(Arc::new(EpsParam))
                .model(Arc::new(Gaussian::default()))
                .solver(Arc::new(solver))
                .steps(n)
                .grid(GridKind::Karras { rho: 7.0 })
                .noise(noise.clone())
                .dtype(DType::F64)
                .build()?
                .run(State::new(normals(4, 3, 2)?, 1.0, 0))?;
            assert_eq!(out.nfe, solver.nfe(n) as u64, "{n} steps");
        }
    }
    Ok(())
}

/// Each parameter is checked; the error names the plugin and the field.
#[test]
fn parameters_are_validated() {
    let inf = f64::INFINITY;
    for (p, field) in [
        ((-1.0, 0.0, inf, 1.0), "s_churn"),
        ((f64::NAN, 0.0, inf, 1.0), "s_churn"),
        ((inf, 0.0, inf, 1.0), "s_churn"),
        ((1.0, -0.1, inf, 1.0), "s_min"),
        ((1.0, inf, inf, 1.0), "s_min"),
        ((1.0, 2.0, 1.0, 1.0), "s_max"),
        ((1.0, 0.0, f64::NAN, 1.0), "s_max"),
        ((1.0, 0.0, inf, 0.0), "s_noise"),
        ((1.0, 0.0, inf, inf), "s_noise"),
    ] {
        let err = edm(p.0, p.1, p.2, p.3).expect_err(field);
        let msg = err.to_string();
        assert!(msg.contains("edm") && msg.contains(field), "{field}: {msg}");
    }
}

/// The crate's `# Claims` and defaults: without churn, ODE order 2 on the Karras grid,
/// deterministic; with churn, unclaimed and stochastic; both affine, 2 NFE per step.
#[test]
fn claims_and_default_schedule() -> Result<()> {
    let karras = GridKind::Karras { rho: 7.0 };
    let ode = SolverClaims {
        order: Order::Ode(2.0),
        nfe_per_step: 2,
        stochastic: false,
        affine: true,
        equation: Equation::ProbabilityFlowOde,
        natural_grid: karras,
    };
    assert_eq!(Edm::default().claims(), ode);
    let churn = edm(40.0, 0.05, 50.0, 1.003)?;
    assert_eq!(
        churn.claims(),
        SolverClaims {
            order: Order::Unclaimed,
            stochastic: true,
            equation: Equation::ReverseSde,
            ..ode
        }
    );
    assert_eq!(
        Edm::default().default_discretization(&Ou),
        Discretization {
            steps: 64,
            grid: karras
        }
    );
    assert_eq!(
        churn.default_discretization(&Ou),
        Discretization {
            steps: 64,
            grid: karras
        }
    );
    Ok(())
}

/// The registration builds from RON (S_max written `inf`), its defaults round-trip, unknown
/// fields are refused, and the ImageNet-64 variant is listed.
#[test]
fn registration() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    assert_eq!(reg.solver("edm", "()")?.claims(), Edm::default().claims());
    let info = &reg.solvers.get("edm")?.info;
    let defaults = (info.default_params)();
    assert!(defaults.contains("s_max: inf"), "{defaults}");
    assert_eq!(
        reg.solver("edm", &defaults)?.claims(),
        Edm::default().claims()
    );
    let built = reg.solver("edm", "(s_churn: 1.0, s_max: inf)")?;
    assert_eq!(built.claims().order, Order::Unclaimed);
    assert!(reg.solver("edm", "(eta: 1.0)").is_err());
    assert!(reg.solver("edm", "(s_noise: 0.0)").is_err());
    assert_eq!(
        info.variants,
        &["(s_churn: 40.0, s_min: 0.05, s_max: 50.0, s_noise: 1.003)"]
    );
    Ok(())
}
