//! DPM-Solver++(2M) against MATH.md §5: a middle step is the 2M update with
//! r = h_prev/h, the first and last steps are DDIM(η = 0)'s first-order exponential integrator
//! step, the returned history is [(λ_t, x̂₀_now)] and the input state is left alone; through the
//! pipeline the pathwise error falls at order 2 on λ-uniform grids, one NFE per step, no noise,
//! and reruns give the same bits.

use std::sync::Arc;

use candle_core::Tensor;
use sdeflow_kernel::{
    Discretization, Equation, ForwardSde, GridKind, Order, Pipeline, Result, RunContext, Solver,
    SolverClaims, State, StepSpan,
    testing::{
        Gaussian, NoNoise, Ou, assert_close, normals, ou_entry, ou_pipeline, ou_step,
        pathwise_errors, rows, tail_order,
    },
};
use sdeflow_solver_dpmpp_2m::DpmSolverPp2m;

/// The exponential-integrator update x_s = (σ_s/σ_t) x_t + α_s (1 − e^{−h}) D (MATH.md §5),
/// computed here element by element with D = `d(row, j, x̂₀_now)` and x̂₀_now in closed form.
fn exp_step(
    x: &Tensor,
    t: f64,
    s: f64,
    d: impl Fn(usize, usize, f64) -> f64,
) -> Result<Vec<Vec<f64>>> {
    let model = Gaussian::default();
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let h = cs.lambda - ct.lambda;
    Ok(rows(x)?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = |(j, &xt): (usize, &f64)| {
                let big_d = d(i, j, model.x0(xt, j, &ct));
                cs.sigma / ct.sigma * xt + cs.alpha * (1.0 - (-h).exp()) * big_d
            };
            r.iter().enumerate().map(f).collect()
        })
        .collect())
}

/// DDIM(η = 0)'s step: D = x̂₀_now.
fn first_order(x: &Tensor, t: f64, s: f64) -> Result<Vec<Vec<f64>>> {
    exp_step(x, t, s, |_, _, x0| x0)
}

/// The first step (no history, or a stale history handed in at step 0) is DDIM(η = 0)'s step,
/// one NFE; the returned history is [(λ_t, x̂₀(x_t, t))] and the input keeps its own history.
#[test]
fn first_step_is_first_order() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(1, 6, 2)?;
    let (t, s) = (1.0, 0.8);
    let fresh = State::new(x.clone(), t, 0);
    let mut stale = fresh.clone();
    stale.history = vec![ou_entry(1.2, normals(9, 6, 2)?)];
    for state in [fresh, stale] {
        let had = state.history.len();
        let (next, nfe) = ou_step(&DpmSolverPp2m, &state, (t, s), 0, 10)?;
        assert_eq!(nfe, 1);
        assert_close(
            &rows(&next.x)?,
            &first_order(&x, t, s)?,
            1e-12,
            "first step",
        );
        assert_eq!(next.history.len(), 1);
        assert_eq!(next.history[0].lambda, Ou.coefs(t).lambda);
        let ct = Ou.coefs(t);
        let x0: Vec<Vec<f64>> = rows(&x)?
            .iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(j, &v)| model.x0(v, j, &ct))
                    .collect()
            })
            .collect();
        assert_close(&rows(&next.history[0].x0_hat)?, &x0, 1e-12, "recorded x̂₀");
        assert_eq!(state.history.len(), had);
    }
    Ok(())
}

/// The last step ignores the history: it is DDIM(η = 0)'s step.
#[test]
fn last_step_is_first_order() -> Result<()> {
    let x = normals(2, 5, 2)?;
    let (t, s) = (0.01, 1e-3);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![ou_entry(0.02, normals(8, 5, 2)?)];
    let (next, nfe) = ou_step(&DpmSolverPp2m, &state, (t, s), 9, 10)?;
    assert_eq!(nfe, 1);
    assert_close(&rows(&next.x)?, &first_order(&x, t, s)?, 1e-12, "last step");
    assert_eq!(next.history[0].lambda, Ou.coefs(t).lambda);
    Ok(())
}

/// A middle step with history is Lu et al.'s Alg. 2 update: r = h_prev/h,
/// D = (1 + 1/(2r)) x̂₀_now − (1/(2r)) x̂₀_prev (MATH.md §5); it differs from the first-order
/// step, and the input state's history is left as it was.
#[test]
fn middle_step_is_the_2m_update() -> Result<()> {
    let x = normals(3, 5, 2)?;
    let prev = normals(7, 5, 2)?;
    let (t_prev, t, s) = (0.6, 0.5, 0.35);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![ou_entry(t_prev, prev.clone())];
    let (next, nfe) = ou_step(&DpmSolverPp2m, &state, (t, s), 4, 10)?;
    assert_eq!(nfe, 1);
    let h = Ou.log_snr(s) - Ou.log_snr(t);
    let h_prev = Ou.log_snr(t) - Ou.log_snr(t_prev);
    let r = h_prev / h;
    let prev_rows = rows(&prev)?;
    let want = exp_step(&x, t, s, |i, j, x0| {
        (1.0 + 1.0 / (2.0 * r)) * x0 - prev_rows[i][j] / (2.0 * r)
    })?;
    let got = rows(&next.x)?;
    assert_close(&got, &want, 1e-12, "2M step");
    let gap = got
        .iter()
        .flatten()
        .zip(first_order(&x, t, s)?.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(gap > 1e-3, "the history made no difference: {gap}");
    assert_eq!(state.history.len(), 1);
    assert_eq!(state.history[0].lambda, Ou.log_snr(t_prev));
    assert_eq!(rows(&state.history[0].x0_hat)?, prev_rows);
    assert_eq!(next.history.len(), 1);
    assert_eq!(next.history[0].lambda, Ou.coefs(t).lambda);
    Ok(())
}

/// A history entry that is not behind this step in λ (λ_prev ≥ λ_t) did not come from the
/// previous step of this run: an error, not a silent extrapolation.
#[test]
fn foreign_history_is_an_error() -> Result<()> {
    let x = normals(4, 3, 2)?;
    for t_prev in [0.5, 0.4] {
        let mut state = State::new(x.clone(), 0.5, 0);
        state.history = vec![ou_entry(t_prev, x.clone())];
        let err = ou_step(&DpmSolverPp2m, &state, (0.5, 0.35), 4, 10).unwrap_err();
        assert!(err.to_string().contains("history"), "{err}");
    }
    Ok(())
}

/// MATH.md §5 and the crate's `# Claims`: order 2 on the PF-ODE, λ-uniform, not affine (a
/// multistep method); 100 λ-uniform steps by default.
#[test]
fn claims_and_default_schedule() -> Result<()> {
    assert_eq!(
        DpmSolverPp2m.claims(),
        SolverClaims {
            order: Order::Ode(2.0),
            nfe_per_step: 1,
            stochastic: false,
            affine: false,
            equation: Equation::ProbabilityFlowOde,
            natural_grid: GridKind::LogSnr,
        }
    );
    assert_eq!(
        DpmSolverPp2m.default_discretization(&Ou),
        Discretization {
            steps: 100,
            grid: GridKind::LogSnr
        }
    );
    Ok(())
}

/// The `dpmpp_2m` registration builds from `()` and takes no fields.
#[test]
fn registration() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    assert_eq!(
        reg.solver("dpmpp_2m", "()")?.claims(),
        DpmSolverPp2m.claims()
    );
    assert!(reg.solver("dpmpp_2m", "(eta: 0.0)").is_err());
    Ok(())
}

fn pipeline(steps: usize) -> Result<Pipeline> {
    ou_pipeline(Arc::new(DpmSolverPp2m), steps)
}

/// Through the pipeline on λ-uniform grids, the pathwise error at t_ε against the closed-form
/// PF-ODE flow map x_s = α_s m + √(v_s/v_t)(x_t − α_t m) falls at order 2 (tail fit ±0.25);
/// NFE counted = steps, no noise asked for, and the final history is the last step's start.
#[test]
fn converges_at_order_two_on_log_snr_grids() -> Result<()> {
    let steps = [16, 32, 64, 128, 256, 512, 1024];
    let errors = pathwise_errors(
        Arc::new(Ou),
        Arc::new(DpmSolverPp2m),
        GridKind::LogSnr,
        &normals(5, 8, 2)?,
        &steps,
        |n, p, out| {
            assert_eq!((out.nfe, out.state.draws), (n as u64, 0));
            assert_eq!(out.state.history.len(), 1);
            assert_eq!(out.state.history[0].lambda, Ou.log_snr(p.times()[n - 1]));
        },
    )?;
    let p = tail_order(&steps, &errors).expect("three errors above 1e-11");
    eprintln!("dpmpp_2m pathwise errors {errors:?}: order {p:.3}");
    assert!((p - 2.0).abs() <= 0.25, "order {p}, errors {errors:?}");
    Ok(())
}

/// The history is threaded through the state: running the pipeline twice gives the same bits,
/// and so does a hand-written loop that passes each returned state to the next step.
#[test]
fn history_is_threaded_and_reruns_are_identical() -> Result<()> {
    let n = 25;
    let x_t = normals(6, 4, 2)?;
    let p = pipeline(n)?;
    let bits = |x: &Tensor| -> Result<Vec<u64>> {
        Ok(rows(x)?.iter().flatten().map(|v| v.to_bits()).collect())
    };
    let a = bits(&p.run(State::new(x_t.clone(), 1.0, 0))?.state.x)?;
    let b = bits(&p.run(State::new(x_t.clone(), 1.0, 0))?.state.x)?;
    assert_eq!(a, b);
    let den = Gaussian::default().denoiser();
    let mut state = State::new(x_t, 1.0, 0);
    for i in 0..n {
        let (from, to) = (Ou.coefs(p.times()[i]), Ou.coefs(p.times()[i + 1]));
        let ctx = RunContext::new(&Ou, &den, &NoNoise, 0).step(StepSpan {
            from,
            to,
            step: i,
            steps: n,
        });
        state = DpmSolverPp2m.step(&ctx, &state)?.state;
    }
    assert_eq!(bits(&state.x)?, a);
    Ok(())
}
