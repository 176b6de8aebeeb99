//! SDE-DPM-Solver++(2M) against its formula (the crate's `# Formula`, MATH.md §5) on the OU
//! SDE with the exact x̂₀ of a Gaussian (sdeflow_kernel::testing), computed here element by
//! element: the first and last steps are first order, a middle step adds the `midpoint` or
//! `heun` term, the noise enters as σ_s sqrt(1 − e^{−2ηh}) z (read with constant noise 0 and
//! 1), η = 0 draws nothing and is DPM-Solver++(2M); history, parameters, claims, registration.

use candle_core::Tensor;
use sdeflow_kernel::{
    Discretization, Equation, ForwardSde, GridKind, HistoryEntry, Order, Result, RunContext,
    Solver, SolverClaims, State, StepSpan,
    noise::{ConstantNoise, NoiseSource},
    testing::{Gaussian, NoNoise, Ou, assert_close, normals, rows},
};
use sdeflow_solver_dpmpp_2m_sde::{Dpmpp2mSde, Params, SolverType};

fn solver(eta: f64, solver_type: SolverType) -> Result<Dpmpp2mSde> {
    Dpmpp2mSde::new(Params { eta, solver_type })
}

/// What one step returned and cost.
struct Out {
    state: State,
    nfe: u64,
    draw_calls: u64,
}

/// One step t → s, step `step` of 10, from `state`, reading [`Gaussian::default`] through ε.
fn step(
    s: &Dpmpp2mSde,
    noise: &dyn NoiseSource,
    state: &State,
    (t, to): (f64, f64),
    step: usize,
) -> Result<Out> {
    let den = Gaussian::default().denoiser();
    let ctx = RunContext::new(&Ou, &den, noise, 5).step(StepSpan {
        from: Ou.coefs(t),
        to: Ou.coefs(to),
        step,
        steps: 10,
    });
    let next = s.step(&ctx, state)?.state;
    Ok(Out {
        state: next,
        nfe: den.nfe(),
        draw_calls: ctx.draw_calls(),
    })
}

/// The crate's formula element by element, with constant noise z and the second-order weight
/// `c` (0: first order) applied to (x̂₀_now − x̂₀_prev)/r.
#[allow(clippy::too_many_arguments)]
fn want(
    x: &[Vec<f64>],
    prev: Option<(&[Vec<f64>], f64)>,
    (t, s): (f64, f64),
    eta: f64,
    c: impl Fn(f64) -> f64,
    z: f64,
) -> Vec<Vec<f64>> {
    let model = Gaussian::default();
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let h = cs.lambda - ct.lambda;
    let big_h = (1.0 + eta) * h;
    let phi = 1.0 - (-big_h).exp();
    let noise = cs.sigma * (1.0 - (-2.0 * eta * h).exp()).sqrt();
    x.iter()
        .enumerate()
        .map(|(i, r)| {
            r.iter()
                .enumerate()
                .map(|(j, &xt)| {
                    let x0 = model.x0(xt, j, &ct);
                    let second = prev.map_or(0.0, |(p, t_prev)| {
                        let inv_r = h / (ct.lambda - Ou.log_snr(t_prev));
                        cs.alpha * c(big_h) * inv_r * (x0 - p[i][j])
                    });
                    cs.sigma / ct.sigma * (-eta * h).exp() * xt
                        + cs.alpha * phi * x0
                        + second
                        + noise * z
                })
                .collect()
        })
        .collect()
}

fn entry(t: f64, x0_hat: Tensor) -> HistoryEntry {
    HistoryEntry {
        t,
        lambda: Ou.log_snr(t),
        x0_hat,
        eps_hat: None,
    }
}

/// The second-order weight c as a function of H = (1 + η) h.
type Weight = fn(f64) -> f64;

fn midpoint(big_h: f64) -> f64 {
    0.5 * (1.0 - (-big_h).exp())
}

fn heun(big_h: f64) -> f64 {
    1.0 - (1.0 - (-big_h).exp()) / big_h
}

/// The first step (no history, or a stale one handed in at step 0) is first order, one NFE,
/// one draw; z enters with σ_s sqrt(1 − e^{−2ηh}); the history becomes [(λ_t, x̂₀_now)].
#[test]
fn first_step_is_first_order_with_exact_noise() -> Result<()> {
    let x = normals(1, 5, 2)?;
    let (t, s) = (1.0, 0.8);
    for eta in [1.0, 0.5, 2.0] {
        let solver = solver(eta, SolverType::Midpoint)?;
        let mut stale = State::new(x.clone(), t, 0);
        stale.history = vec![entry(1.2, normals(9, 5, 2)?)];
        for state in [State::new(x.clone(), t, 0), stale] {
            for z in [0.0, 1.0] {
                let out = step(&solver, &ConstantNoise(z), &state, (t, s), 0)?;
                assert_eq!((out.nfe, out.draw_calls), (1, 1));
                let w = want(&rows(&x)?, None, (t, s), eta, |_| 0.0, z);
                assert_close(&rows(&out.state.x)?, &w, 1e-12, &format!("η {eta}, z {z}"));
                assert_eq!(out.state.history.len(), 1);
                assert_eq!(out.state.history[0].lambda, Ou.log_snr(t));
            }
        }
    }
    Ok(())
}

/// A middle step with history adds α_s c (x̂₀_now − x̂₀_prev)/r: c = (1 − e^{−H})/2 for
/// `midpoint`, 1 − (1 − e^{−H})/H for `heun`; the input state keeps its history.
#[test]
fn middle_step_adds_the_second_order_term() -> Result<()> {
    let x = normals(3, 5, 2)?;
    let prev = normals(7, 5, 2)?;
    let (t_prev, t, s) = (0.6, 0.5, 0.35);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![entry(t_prev, prev.clone())];
    let cases: [(SolverType, Weight); 2] =
        [(SolverType::Midpoint, midpoint), (SolverType::Heun, heun)];
    for eta in [1.0, 0.3] {
        for (kind, c) in cases {
            for z in [0.0, 1.0] {
                let out = step(&solver(eta, kind)?, &ConstantNoise(z), &state, (t, s), 4)?;
                assert_eq!((out.nfe, out.draw_calls), (1, 1));
                let p = rows(&prev)?;
                let w = want(&rows(&x)?, Some((&p, t_prev)), (t, s), eta, c, z);
                let first = want(&rows(&x)?, None, (t, s), eta, |_| 0.0, z);
                let got = rows(&out.state.x)?;
                assert_close(&got, &w, 1e-12, &format!("{kind:?}, η {eta}, z {z}"));
                let gap = got
                    .iter()
                    .flatten()
                    .zip(first.iter().flatten())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(gap > 1e-3, "the history made no difference: {gap}");
            }
        }
    }
    assert_eq!(state.history[0].lambda, Ou.log_snr(t_prev));
    assert_eq!(rows(&state.history[0].x0_hat)?, rows(&prev)?);
    Ok(())
}

/// The last step ignores the history (first order) but still draws its noise.
#[test]
fn last_step_is_first_order() -> Result<()> {
    let x = normals(2, 5, 2)?;
    let (t, s) = (0.01, 1e-3);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![entry(0.02, normals(8, 5, 2)?)];
    let out = step(
        &Dpmpp2mSde::default(),
        &ConstantNoise(1.0),
        &state,
        (t, s),
        9,
    )?;
    assert_eq!((out.nfe, out.draw_calls), (1, 1));
    let w = want(&rows(&x)?, None, (t, s), 1.0, |_| 0.0, 1.0);
    assert_close(&rows(&out.state.x)?, &w, 1e-12, "last step");
    Ok(())
}

/// η = 0 draws nothing and is DPM-Solver++(2M) (MATH.md §5):
/// D = (1 + 1/(2r)) x̂₀_now − (1/(2r)) x̂₀_prev, x_s = (σ_s/σ_t) x_t + α_s (1 − e^{−h}) D.
#[test]
fn eta_zero_is_dpmpp_2m() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(4, 5, 2)?;
    let prev = normals(6, 5, 2)?;
    let (t_prev, t, s) = (0.6, 0.5, 0.35);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![entry(t_prev, prev.clone())];
    let out = step(
        &solver(0.0, SolverType::Midpoint)?,
        &NoNoise,
        &state,
        (t, s),
        4,
    )?;
    assert_eq!((out.nfe, out.draw_calls), (1, 0));
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let h = cs.lambda - ct.lambda;
    let r = (ct.lambda - Ou.log_snr(t_prev)) / h;
    let p = rows(&prev)?;
    let w: Vec<Vec<f64>> = rows(&x)?
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter()
                .enumerate()
                .map(|(j, &xt)| {
                    let x0 = model.x0(xt, j, &ct);
                    let d = (1.0 + 1.0 / (2.0 * r)) * x0 - p[i][j] / (2.0 * r);
                    cs.sigma / ct.sigma * xt + cs.alpha * (1.0 - (-h).exp()) * d
                })
                .collect()
        })
        .collect();
    assert_close(&rows(&out.state.x)?, &w, 1e-12, "η = 0");
    Ok(())
}

/// A history entry not behind this step in λ is an error naming the plugin and the history,
/// and so is a stochastic step away from the data.
#[test]
fn foreign_history_and_backward_steps_are_errors() -> Result<()> {
    let x = normals(5, 3, 2)?;
    for t_prev in [0.5, 0.4] {
        let mut state = State::new(x.clone(), 0.5, 0);
        state.history = vec![entry(t_prev, x.clone())];
        let err = step(
            &Dpmpp2mSde::default(),
            &ConstantNoise(0.0),
            &state,
            (0.5, 0.35),
            4,
        )
        .err()
        .expect("a foreign history");
        let msg = err.to_string();
        assert!(
            msg.contains("dpmpp_2m_sde") && msg.contains("history"),
            "{msg}"
        );
    }
    let state = State::new(x, 0.3, 0);
    let err = step(
        &Dpmpp2mSde::default(),
        &ConstantNoise(0.0),
        &state,
        (0.3, 0.5),
        0,
    )
    .err()
    .expect("a step away from the data");
    assert!(err.to_string().contains("dpmpp_2m_sde"), "{err}");
    Ok(())
}

/// η must be finite and ≥ 0; the error names the plugin and the field.
#[test]
fn eta_is_validated() {
    for eta in [-0.1, f64::NAN, f64::INFINITY] {
        let err = solver(eta, SolverType::Midpoint).expect_err("a bad eta");
        let msg = err.to_string();
        assert!(msg.contains("dpmpp_2m_sde") && msg.contains("eta"), "{msg}");
    }
    assert!(solver(0.0, SolverType::Heun).is_ok());
}

/// The crate's `# Claims`: weak order 2, strong 1 at η > 0 on λ-uniform grids; ODE order 2 at
/// η = 0; affine; 1 NFE per step; 50 λ-uniform steps by default.
#[test]
fn claims_and_default_schedule() -> Result<()> {
    let sde = SolverClaims {
        order: Order::Sde {
            weak: 2.0,
            strong: 1.0,
        },
        nfe_per_step: 1,
        stochastic: true,
        affine: true,
        equation: Equation::ReverseSde,
        natural_grid: GridKind::LogSnr,
    };
    assert_eq!(Dpmpp2mSde::default().claims(), sde);
    let ode = SolverClaims {
        order: Order::Ode(2.0),
        stochastic: false,
        equation: Equation::ProbabilityFlowOde,
        ..sde
    };
    assert_eq!(solver(0.0, SolverType::Midpoint)?.claims(), ode);
    assert_eq!(
        Dpmpp2mSde::default().default_discretization(&Ou),
        Discretization {
            steps: 50,
            grid: GridKind::LogSnr
        }
    );
    assert_eq!(Dpmpp2mSde::default().nfe(50), 50);
    Ok(())
}

/// The registration builds from RON, rejects unknown fields and solver types, and lists the
/// `heun` variant.
#[test]
fn registration() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    assert_eq!(
        reg.solver("dpmpp_2m_sde", "()")?.claims(),
        Dpmpp2mSde::default().claims()
    );
    let built = reg.solver("dpmpp_2m_sde", "(eta: 0.0, solver_type: heun)")?;
    assert_eq!(built.claims().order, Order::Ode(2.0));
    assert!(reg.solver("dpmpp_2m_sde", "(solver_type: rk4)").is_err());
    assert!(reg.solver("dpmpp_2m_sde", "(s_noise: 1.0)").is_err());
    assert!(reg.solver("dpmpp_2m_sde", "(eta: -1.0)").is_err());
    let info = &reg.solvers.get("dpmpp_2m_sde")?.info;
    assert_eq!(info.variants, &["(solver_type: heun)"]);
    Ok(())
}
