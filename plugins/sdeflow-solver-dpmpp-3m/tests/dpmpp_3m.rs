//! DPM-Solver++(3M) against its formula: a step with two previous evaluations is Lu et al.'s
//! multistep third-order update (dpm-solver's `multistep_dpm_solver_third_update`, written out
//! here in its own variables r0, r1, D1_0, D1_1, D1, D2, phi_1..3), the warm-up steps are the
//! first- and second-order ones, the last steps of short runs are lowered with
//! `lower_order_final`, the history keeps the last two evaluations and the input state is left
//! alone; a history that is not this run's is an error; through the pipeline the pathwise error
//! falls at order 2 on λ-uniform grids, one NFE per step, and reruns give the same bits.

use std::sync::Arc;

use candle_core::Tensor;
use sdeflow_kernel::{
    Discretization, Equation, ForwardSde, GridKind, HistoryEntry, Order, Pipeline, Result,
    RunContext, Solver, SolverClaims, State, StepSpan,
    testing::{
        Gaussian, NoNoise, Ou, assert_close, normals, ou_entry, ou_pipeline, ou_step,
        pathwise_errors, rows, tail_order,
    },
};
use sdeflow_solver_dpmpp_3m::{DpmSolverPp3m, Params};

fn solver(lower_order_final: bool) -> DpmSolverPp3m {
    DpmSolverPp3m::new(Params { lower_order_final }).expect("every bool is valid")
}

/// A state at `t` holding `history` (oldest first).
fn state_with(x: &Tensor, t: f64, history: Vec<HistoryEntry>) -> State {
    let mut state = State::new(x.clone(), t, 0);
    state.history = history;
    state
}

/// The update of dpm-solver's multistep DPM-Solver++ of `order` (1, 2 with its "dpmsolver"
/// second-order form, or 3), element by element, from x at t to s, with m₀ = x̂₀(x_t, t) in
/// closed form and the previous x̂₀'s `prev` = [(t₁, m₁), (t₂, m₂)], newest first.
fn reference(
    x: &Tensor,
    (t, s): (f64, f64),
    prev: &[(f64, Vec<Vec<f64>>)],
    order: usize,
) -> Result<Vec<Vec<f64>>> {
    let model = Gaussian::default();
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let h = cs.lambda - ct.lambda;
    let phi_1 = (-h).exp_m1();
    let phi_2 = phi_1 / h + 1.0;
    let phi_3 = phi_2 / h - 0.5;
    Ok(rows(x)?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = |(j, &xt): (usize, &f64)| {
                let m0 = model.x0(xt, j, &ct);
                let linear = cs.sigma / ct.sigma * xt - cs.alpha * phi_1 * m0;
                match order {
                    1 => linear,
                    2 => {
                        let (t1, m1) = (prev[0].0, prev[0].1[i][j]);
                        let r0 = (ct.lambda - Ou.log_snr(t1)) / h;
                        let d1 = (m0 - m1) / r0;
                        linear - 0.5 * cs.alpha * phi_1 * d1
                    }
                    _ => {
                        let (t1, m1) = (prev[0].0, prev[0].1[i][j]);
                        let (t2, m2) = (prev[1].0, prev[1].1[i][j]);
                        let (l1, l2) = (Ou.log_snr(t1), Ou.log_snr(t2));
                        let (r0, r1) = ((ct.lambda - l1) / h, (l1 - l2) / h);
                        let d1_0 = (m0 - m1) / r0;
                        let d1_1 = (m1 - m2) / r1;
                        let d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1);
                        let d2 = (d1_0 - d1_1) / (r0 + r1);
                        linear + cs.alpha * phi_2 * d1 - cs.alpha * phi_3 * d2
                    }
                }
            };
            r.iter().enumerate().map(f).collect()
        })
        .collect())
}

/// The largest elementwise gap between two sets of rows.
fn gap(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f64::max)
}

/// The first step (no history, or a stale history handed in at step 0) is DDIM(η = 0)'s step,
/// one NFE; the returned history is [(λ_t, x̂₀(x_t, t))] and the input keeps its own history.
#[test]
fn first_step_is_first_order() -> Result<()> {
    let model = Gaussian::default();
    let x = normals(1, 6, 2)?;
    let (t, s) = (1.0, 0.8);
    let stale = vec![
        ou_entry(1.3, normals(8, 6, 2)?),
        ou_entry(1.2, normals(9, 6, 2)?),
    ];
    for history in [vec![], stale] {
        let state = state_with(&x, t, history);
        let had = state.history.len();
        let (next, nfe) = ou_step(&solver(true), &state, (t, s), 0, 20)?;
        assert_eq!(nfe, 1);
        assert_close(
            &rows(&next.x)?,
            &reference(&x, (t, s), &[], 1)?,
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

/// The second step is the second-order warm-up (dpmpp_2m's update) even when two entries are
/// at hand, and the returned history is [(λ₁, m₁), (λ_t, m₀)].
#[test]
fn second_step_is_second_order() -> Result<()> {
    let x = normals(2, 5, 2)?;
    let (m1, m2) = (normals(7, 5, 2)?, normals(6, 5, 2)?);
    let (t2, t1, t, s) = (0.8, 0.6, 0.5, 0.35);
    let state = state_with(&x, t, vec![ou_entry(t2, m2), ou_entry(t1, m1.clone())]);
    let (next, nfe) = ou_step(&solver(true), &state, (t, s), 1, 20)?;
    assert_eq!(nfe, 1);
    let want = reference(&x, (t, s), &[(t1, rows(&m1)?)], 2)?;
    assert_close(&rows(&next.x)?, &want, 1e-12, "second step");
    assert!(gap(&want, &reference(&x, (t, s), &[], 1)?) > 1e-3);
    let lambdas: Vec<f64> = next.history.iter().map(|e| e.lambda).collect();
    assert_eq!(lambdas, [Ou.log_snr(t1), Ou.coefs(t).lambda]);
    assert_eq!(rows(&next.history[0].x0_hat)?, rows(&m1)?);
    Ok(())
}

/// From the third step on, with two previous evaluations on an uneven λ grid, the step is the
/// reference code's third-order multistep update; it differs from the second-order one, and
/// the input state's history is left as it was.
#[test]
fn later_steps_are_the_3m_update() -> Result<()> {
    let x = normals(3, 5, 2)?;
    let (m1, m2) = (normals(7, 5, 2)?, normals(6, 5, 2)?);
    let (t2, t1, t, s) = (0.7, 0.6, 0.5, 0.35);
    let state = state_with(
        &x,
        t,
        vec![ou_entry(t2, m2.clone()), ou_entry(t1, m1.clone())],
    );
    let prev = [(t1, rows(&m1)?), (t2, rows(&m2)?)];
    for (step, lower_order_final) in [(2, true), (7, true), (19, true), (9, false)] {
        let steps = if lower_order_final { 20 } else { 10 };
        let (next, nfe) = ou_step(&solver(lower_order_final), &state, (t, s), step, steps)?;
        assert_eq!(nfe, 1);
        let want = reference(&x, (t, s), &prev, 3)?;
        let got = rows(&next.x)?;
        assert_close(&got, &want, 1e-12, &format!("step {step} of {steps}"));
        assert!(gap(&got, &reference(&x, (t, s), &prev[..1], 2)?) > 1e-4);
        let lambdas: Vec<f64> = next.history.iter().map(|e| e.lambda).collect();
        assert_eq!(lambdas, [Ou.log_snr(t1), Ou.coefs(t).lambda]);
    }
    assert_eq!(state.history.len(), 2);
    assert_eq!(rows(&state.history[1].x0_hat)?, prev[0].1);
    Ok(())
}

/// Below 15 steps with `lower_order_final`, the last step is first order and the one before it
/// second order (diffusers' rule); without it, or at 15 steps and more, they stay third order.
/// The warm-up and a short history lower the order too.
#[test]
fn order_schedule() -> Result<()> {
    let (on, off) = (solver(true), solver(false));
    let orders = |s: &DpmSolverPp3m, steps: usize| -> Vec<usize> {
        (0..steps).map(|i| s.step_order(i, steps, 2)).collect()
    };
    assert_eq!(orders(&on, 6), [1, 2, 3, 3, 2, 1]);
    assert_eq!(orders(&off, 6), [1, 2, 3, 3, 3, 3]);
    assert_eq!(orders(&on, 14)[11..], [3, 2, 1]);
    assert_eq!(orders(&on, 15)[12..], [3, 3, 3]);
    assert_eq!(orders(&on, 1), [1]);
    assert_eq!(orders(&on, 2), [1, 1]);
    assert_eq!(orders(&on, 3), [1, 2, 1]);
    assert_eq!(orders(&off, 3), [1, 2, 3]);
    assert_eq!((on.step_order(5, 20, 0), on.step_order(5, 20, 1)), (1, 2));

    // The schedule drives the step: the last of 10 steps is DDIM's, the one before 2M's.
    let x = normals(4, 5, 2)?;
    let (m1, m2) = (normals(7, 5, 2)?, normals(6, 5, 2)?);
    let (t2, t1, t, s) = (0.03, 0.02, 0.01, 1e-3);
    let state = state_with(
        &x,
        t,
        vec![ou_entry(t2, m2.clone()), ou_entry(t1, m1.clone())],
    );
    let prev = [(t1, rows(&m1)?), (t2, rows(&m2)?)];
    for (step, order) in [(9, 1), (8, 2), (7, 3)] {
        let (next, _) = ou_step(&on, &state, (t, s), step, 10)?;
        let want = reference(&x, (t, s), &prev[..order - 1], order)?;
        assert_close(&rows(&next.x)?, &want, 1e-12, &format!("step {step} of 10"));
    }
    let (next, _) = ou_step(&off, &state, (t, s), 9, 10)?;
    let want = reference(&x, (t, s), &prev, 3)?;
    assert_close(
        &rows(&next.x)?,
        &want,
        1e-12,
        "last step, lower_order_final off",
    );
    Ok(())
}

/// History entries that are not behind this step in λ, or not in increasing λ, did not come
/// from the previous steps of this run: an error naming the plugin, not an extrapolation.
#[test]
fn foreign_history_is_an_error() -> Result<()> {
    let x = normals(5, 3, 2)?;
    let histories = [
        vec![ou_entry(0.7, x.clone()), ou_entry(0.5, x.clone())],
        vec![ou_entry(0.7, x.clone()), ou_entry(0.4, x.clone())],
        vec![ou_entry(0.55, x.clone()), ou_entry(0.6, x.clone())],
        vec![ou_entry(0.6, x.clone()), ou_entry(0.6, x.clone())],
    ];
    for history in histories {
        let state = state_with(&x, 0.5, history);
        let err = ou_step(&solver(true), &state, (0.5, 0.35), 4, 20).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("dpmpp_3m") && msg.contains("history"), "{msg}");
    }
    Ok(())
}

/// The crate's `# Claims`: order 2 on the PF-ODE (measured: the reference update's D2 term
/// leaves an h³ x̂₀″ local error), λ-uniform, one NFE, not affine; 100 λ-uniform steps.
#[test]
fn claims_and_default_schedule() -> Result<()> {
    let want = SolverClaims {
        order: Order::Ode(2.0),
        nfe_per_step: 1,
        stochastic: false,
        affine: false,
        equation: Equation::ProbabilityFlowOde,
        natural_grid: GridKind::LogSnr,
    };
    assert_eq!(solver(true).claims(), want);
    assert_eq!(
        solver(true).default_discretization(&Ou),
        Discretization {
            steps: 100,
            grid: GridKind::LogSnr
        }
    );
    Ok(())
}

/// The registration builds from `()` and `(lower_order_final: false)`, and refuses unknown
/// fields and values that are not booleans.
#[test]
fn registration_and_parameters() -> Result<()> {
    let reg = sdeflow_kernel::Registry::global()?;
    assert_eq!(
        reg.solver("dpmpp_3m", "()")?.claims(),
        solver(true).claims()
    );
    reg.solver("dpmpp_3m", "(lower_order_final: false)")?;
    assert_eq!(
        Params::default(),
        Params {
            lower_order_final: true
        }
    );
    for bad in ["(eta: 0.0)", "(lower_order_final: 1.0)", "(order: 3)"] {
        assert!(reg.solver("dpmpp_3m", bad).is_err(), "{bad}");
    }
    Ok(())
}

fn pipeline(steps: usize) -> Result<Pipeline> {
    ou_pipeline(Arc::new(solver(true)), steps)
}

/// Through the pipeline on λ-uniform grids, the pathwise error at t_ε against the closed-form
/// PF-ODE flow map falls at order 2 (tail fit ±0.25); NFE counted = steps, no noise, and the
/// final history holds the last two steps' starts.
#[test]
fn converges_at_order_two_on_log_snr_grids() -> Result<()> {
    let steps = [16, 32, 64, 128, 256, 512, 1024];
    let errors = pathwise_errors(
        Arc::new(Ou),
        Arc::new(solver(true)),
        GridKind::LogSnr,
        &normals(5, 8, 2)?,
        &steps,
        |n, p, out| {
            assert_eq!((out.nfe, out.state.draws), (n as u64, 0));
            let lambdas: Vec<f64> = out.state.history.iter().map(|e| e.lambda).collect();
            let times = p.times();
            assert_eq!(
                lambdas,
                [Ou.log_snr(times[n - 2]), Ou.log_snr(times[n - 1])]
            );
        },
    )?;
    let p = tail_order(&steps, &errors).expect("three errors above 1e-11");
    eprintln!("dpmpp_3m pathwise errors {errors:?}: order {p:.3}");
    assert!((p - 2.0).abs() <= 0.25, "order {p}, errors {errors:?}");
    Ok(())
}

/// The history is threaded through the state: running the pipeline twice gives the same bits,
/// and so does a hand-written loop that passes each returned state to the next step.
#[test]
fn history_is_threaded_and_reruns_are_identical() -> Result<()> {
    let n = 12;
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
        state = solver(true).step(&ctx, &state)?.state;
    }
    assert_eq!(bits(&state.x)?, a);
    Ok(())
}
