//! DPM-Solver++(2S) against its formula: a step is dpm-solver's
//! `singlestep_dpm_solver_second_update` (DPM-Solver++, "dpmsolver" form), written out here in
//! its own variables (phi_11, phi_1, r1), through the intermediate time λ_t + r h found in
//! closed form on the OU SDE; at r = ½ it is k-diffusion's `sample_dpmpp_2s_ancestral` at
//! η = 0; every step, the first and last included, is the same two-NFE step; it is affine in x;
//! bad r and steps away from the data are errors; through the pipeline the pathwise error falls
//! at order 2 on λ-uniform grids.

use std::sync::Arc;

use candle_core::Tensor;
use sdeflow_kernel::{
    Discretization, Equation, Error, ForwardSde, GridKind, Order, Result, RunContext, Solver,
    SolverClaims, State, StepSpan,
    testing::{Gaussian, NoNoise, Ou, assert_close, normals, pathwise_errors, rows, tail_order},
};
use sdeflow_solver_dpmpp_2s::{DpmSolverPp2s, Params};

fn solver(r: f64) -> DpmSolverPp2s {
    DpmSolverPp2s::new(Params { r }).expect("r in (0, 1)")
}

/// One step t → s, step `step` of `steps`, reading [`Gaussian::default`]: (x_s, NFE).
fn one_step(
    solver: &DpmSolverPp2s,
    x: &Tensor,
    (t, s): (f64, f64),
    step: usize,
    steps: usize,
) -> Result<(Tensor, u64)> {
    let den = Gaussian::default().denoiser();
    let ctx = RunContext::new(&Ou, &den, &NoNoise, 5).step(StepSpan {
        from: Ou.coefs(t),
        to: Ou.coefs(s),
        step,
        steps,
    });
    let out = solver.step(&ctx, &State::new(x.clone(), t, 0))?;
    assert!(out.error_estimate.is_none());
    assert!(out.state.history.is_empty());
    assert_eq!(ctx.draws_taken(), 0);
    Ok((out.state.x, den.nfe()))
}

/// dpm-solver's DPM-Solver++(2S) update, element by element, with x̂₀ in closed form:
/// s1 = λ⁻¹(λ_t + r h), x_s1 = (σ_s1/σ_t) x − α_s1 phi_11 m_t,
/// x_s = (σ_s/σ_t) x − α_s phi_1 m_t − (0.5/r) α_s phi_1 (m_s1 − m_t).
fn reference(x: &Tensor, (t, s): (f64, f64), r: f64) -> Result<Vec<Vec<f64>>> {
    let model = Gaussian::default();
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let h = cs.lambda - ct.lambda;
    let c1 = Ou.coefs(Ou.t_of_log_snr(ct.lambda + r * h));
    let phi_11 = (-r * h).exp_m1();
    let phi_1 = (-h).exp_m1();
    Ok(rows(x)?
        .iter()
        .map(|row| {
            let f = |(j, &xt): (usize, &f64)| {
                let m_t = model.x0(xt, j, &ct);
                let x_s1 = c1.sigma / ct.sigma * xt - c1.alpha * phi_11 * m_t;
                let m_s1 = model.x0(x_s1, j, &c1);
                cs.sigma / ct.sigma * xt
                    - cs.alpha * phi_1 * m_t
                    - 0.5 / r * cs.alpha * phi_1 * (m_s1 - m_t)
            };
            row.iter().enumerate().map(f).collect()
        })
        .collect())
}

/// Every step — first, middle, last, long and short — is the reference update with two NFE,
/// for the midpoint and for other r.
#[test]
fn step_matches_the_reference_update() -> Result<()> {
    let x = normals(1, 6, 2)?;
    for r in [0.5, 0.3, 0.9] {
        for ((t, s), step) in [((1.0, 0.8), 0), ((0.3, 0.29), 4), ((0.01, 0.001), 9)] {
            let (got, nfe) = one_step(&solver(r), &x, (t, s), step, 10)?;
            assert_eq!(nfe, 2);
            let what = format!("r = {r}, t = {t}, s = {s}");
            assert_close(&rows(&got)?, &reference(&x, (t, s), r)?, 1e-12, &what);
        }
    }
    Ok(())
}

/// At r = ½ the step is k-diffusion's `sample_dpmpp_2s_ancestral` at η = 0: a DDIM step to the
/// λ-midpoint, then x_s = (σ_s/σ_t) x_t + α_s (1 − e^{−h}) x̂₀(x_mid, t_mid).
#[test]
fn midpoint_is_k_diffusions_2s() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(2, 5, 2)?;
    let (t, s) = (0.6, 0.2);
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let h = cs.lambda - ct.lambda;
    let cm = Ou.coefs(Ou.t_of_log_snr(ct.lambda + 0.5 * h));
    let want: Vec<Vec<f64>> = rows(&x)?
        .iter()
        .map(|row| {
            let f = |(j, &xt): (usize, &f64)| {
                let x_mid = cm.sigma / ct.sigma * xt
                    + cm.alpha * (1.0 - (-0.5 * h).exp()) * model.x0(xt, j, &ct);
                cs.sigma / ct.sigma * xt + cs.alpha * (1.0 - (-h).exp()) * model.x0(x_mid, j, &cm)
            };
            row.iter().enumerate().map(f).collect()
        })
        .collect();
    let (got, _) = one_step(&DpmSolverPp2s::default(), &x, (t, s), 3, 10)?;
    assert_close(&rows(&got)?, &want, 1e-12, "midpoint step");
    Ok(())
}

/// For the affine score of a Gaussian the step is affine in x: the image of a midpoint is the
/// midpoint of the images.
#[test]
fn step_is_affine_in_x() -> Result<()> {
    let (a, b) = (normals(3, 4, 2)?, normals(4, 4, 2)?);
    let mid = ((&a + &b)? * 0.5)?;
    let step = |x: &Tensor| one_step(&solver(0.4), x, (0.7, 0.5), 2, 10).map(|o| o.0);
    let want = ((step(&a)? + step(&b)?)? * 0.5)?;
    assert_close(&rows(&step(&mid)?)?, &rows(&want)?, 1e-12, "affine");
    Ok(())
}

/// r outside (0, 1), or not finite, is refused naming `r`; so is a step that goes away from the
/// data (no intermediate point inside it), naming the grid.
#[test]
fn bad_r_and_backward_steps_are_errors() -> Result<()> {
    for r in [0.0, 1.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
        match DpmSolverPp2s::new(Params { r }) {
            Err(Error::InvalidParam { plugin, field, .. }) => {
                assert_eq!(
                    (plugin.as_str(), field.as_str()),
                    ("dpmpp_2s", "r"),
                    "r = {r}"
                );
            }
            other => panic!("r = {r}: {other:?}"),
        }
    }
    let x = normals(5, 3, 2)?;
    for (t, s) in [(0.3, 0.5), (0.3, 0.3)] {
        let err = one_step(&DpmSolverPp2s::default(), &x, (t, s), 0, 5).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidParam { plugin, field, .. } if plugin == "dpmpp_2s" && field == "grid"),
            "{err}"
        );
    }
    Ok(())
}

/// The crate's `# Claims`: order 2 on the PF-ODE, λ-uniform, two NFE, affine; 50 λ-uniform
/// steps by default.
#[test]
fn claims_and_default_schedule() -> Result<()> {
    assert_eq!(
        DpmSolverPp2s::default().claims(),
        SolverClaims {
            order: Order::Ode(2.0),
            nfe_per_step: 2,
            stochastic: false,
            affine: true,
            equation: Equation::ProbabilityFlowOde,
            natural_grid: GridKind::LogSnr,
        }
    );
    assert_eq!(
        DpmSolverPp2s::default().default_discretization(&Ou),
        Discretization {
            steps: 50,
            grid: GridKind::LogSnr
        }
    );
    assert_eq!(DpmSolverPp2s::default().nfe(50), 100);
    Ok(())
}

/// The registration builds from `()` (r = ½) and `(r: 0.3)`, and refuses unknown fields and
/// r outside (0, 1).
#[test]
fn registration_and_parameters() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    assert_eq!(
        reg.solver("dpmpp_2s", "()")?.claims(),
        DpmSolverPp2s::default().claims()
    );
    assert_eq!(Params::default().r, 0.5);
    reg.solver("dpmpp_2s", "(r: 0.3)")?;
    for bad in ["(eta: 0.0)", "(r: 1.0)", "(r: 0.0)", "(r: -0.2)"] {
        assert!(reg.solver("dpmpp_2s", bad).is_err(), "{bad}");
    }
    Ok(())
}

/// Through the pipeline on λ-uniform grids, the pathwise error at t_ε against the closed-form
/// PF-ODE flow map falls at order 2 (tail fit ±0.25) for the midpoint and for r = 0.3; NFE
/// counted = 2 × steps, no noise.
#[test]
fn converges_at_order_two_on_log_snr_grids() -> Result<()> {
    let steps = [16, 32, 64, 128, 256, 512];
    let x_t = normals(6, 8, 2)?;
    for r in [0.5, 0.3] {
        let errors = pathwise_errors(
            Arc::new(Ou),
            Arc::new(solver(r)),
            GridKind::LogSnr,
            &x_t,
            &steps,
            |n, _, out| assert_eq!((out.nfe, out.state.draws), (2 * n as u64, 0)),
        )?;
        let p = tail_order(&steps, &errors).expect("three errors above 1e-11");
        eprintln!("dpmpp_2s(r = {r}) pathwise errors {errors:?}: order {p:.3}");
        assert!(
            (p - 2.0).abs() <= 0.25,
            "r = {r}: order {p}, errors {errors:?}"
        );
    }
    Ok(())
}
