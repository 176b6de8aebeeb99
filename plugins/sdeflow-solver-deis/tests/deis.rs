//! DEIS (tAB) against its formula (the crate's `# Formula`, MATH.md §5) on the exact model of
//! a Gaussian (affine in x): the first step is DDIM(η = 0); a step with history is
//! x_s = (α_s/α_t) x_t + Σ_j C_j ε̂_j with C_j = α_s ∫_t^s σ̃′ ℓ_j dτ computed here by an
//! independent rule (the composite two-point Gauss rule, exact where σ̃′ is piecewise
//! constant); warm-up and the final lower orders below 15 steps; history errors; parameters;
//! and the pathwise order on λ-uniform grids.

use std::sync::Arc;

use candle_core::Tensor;
use sdeflow_kernel::{
    Equation, Error, ForwardSde, GridKind, HistoryEntry, Order, Result, RunContext, Solver, State,
    StepSpan, TimeCoefs,
    testing::{Gaussian, NoNoise, Ou, assert_close, normals, pathwise_errors, rows, tail_order},
};
use sdeflow_solver_deis::{Deis, Params};

/// α = 1, σ = t, and σ = 2t − 0.5 above the knot t = 0.5 (f = 0, g² = dσ²/dt): σ̃′ = 1, then
/// 2, so every C_j is the integral of a polynomial on each side of the knot.
#[derive(Debug)]
struct Kinked;

impl ForwardSde for Kinked {
    fn t_max(&self) -> f64 {
        2.0
    }
    fn t_eps(&self) -> f64 {
        0.01
    }
    fn alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        if t < 0.5 { t } else { 2.0 * t - 0.5 }
    }
    fn drift_coef(&self, _t: f64) -> f64 {
        0.0
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        let slope = if t < 0.5 { 1.0 } else { 2.0 };
        2.0 * self.sigma(t) * slope
    }
    fn prior_std(&self) -> f64 {
        3.5
    }
    fn knots(&self) -> Vec<f64> {
        vec![0.5]
    }
}

/// One step t → s, step `step` of `steps`, from `state`, reading [`Gaussian::default`] under
/// `sde`: (the returned state, NFE).
fn one_step(
    solver: &Deis,
    sde: &dyn ForwardSde,
    state: &State,
    (t, s): (f64, f64),
    (step, steps): (usize, usize),
) -> Result<(State, u64)> {
    let den = Gaussian::default().denoiser();
    let ctx = RunContext::new(sde, &den, &NoNoise, 5).step(StepSpan {
        from: sde.coefs(t),
        to: sde.coefs(s),
        step,
        steps,
    });
    let out = solver.step(&ctx, state)?;
    assert!(out.error_estimate.is_none());
    Ok((out.state, den.nfe()))
}

/// ε̂(x_t, t) of the Gaussian in closed form: ε̂ = −σ ŝ.
fn eps_now(x: &Tensor, c: &TimeCoefs) -> Result<Vec<Vec<f64>>> {
    let model = Gaussian::default();
    Ok(rows(x)?
        .iter()
        .map(|r| {
            let f = |(j, &v): (usize, &f64)| -c.sigma * model.score(v, j, c);
            r.iter().enumerate().map(f).collect()
        })
        .collect())
}

fn entry(sde: &dyn ForwardSde, t: f64, eps: &Tensor) -> HistoryEntry {
    HistoryEntry::both(&sde.coefs(t), eps.zeros_like().expect("zeros"), eps.clone())
}

/// The Lagrange basis ℓ_j(τ) through `nodes`.
fn lagrange(nodes: &[f64], j: usize, tau: f64) -> f64 {
    (0..nodes.len())
        .filter(|&k| k != j)
        .map(|k| (tau - nodes[k]) / (nodes[j] - nodes[k]))
        .product()
}

/// C_j = α_s ∫_t^s σ̃′(τ) ℓ_j(τ) dτ by the composite two-point Gauss rule (exact for cubics,
/// error O(panel⁴) otherwise) with `n` panels on each side of the knots in (s, t),
/// σ̃′ = g²/(2σα).
fn coefficients(sde: &dyn ForwardSde, nodes: &[f64], s: f64, n: usize) -> Vec<f64> {
    let t = nodes[0];
    let mut cuts = vec![s];
    cuts.extend(sde.knots().into_iter().filter(|&k| s < k && k < t));
    cuts.push(t);
    (0..nodes.len())
        .map(|j| {
            let f = |tau: f64| {
                let c = sde.coefs(tau);
                c.g2 / (2.0 * c.sigma * c.alpha) * lagrange(nodes, j, tau)
            };
            let integral: f64 = cuts
                .windows(2)
                .map(|w| {
                    let h = (w[1] - w[0]) / n as f64;
                    let r = 0.5 * h / 3f64.sqrt();
                    (0..n)
                        .map(|i| {
                            let m = w[0] + (i as f64 + 0.5) * h;
                            0.5 * h * (f(m - r) + f(m + r))
                        })
                        .sum::<f64>()
                })
                .sum();
            -sde.coefs(s).alpha * integral
        })
        .collect()
}

/// x_s = (α_s/α_t) x_t + Σ_j C_j ε̂_j element by element, ε̂_0 in closed form.
fn expected(
    sde: &dyn ForwardSde,
    x: &Tensor,
    older: &[&Tensor],
    nodes: &[f64],
    s: f64,
    panels: usize,
) -> Result<Vec<Vec<f64>>> {
    let (ct, cs) = (sde.coefs(nodes[0]), sde.coefs(s));
    let c = coefficients(sde, nodes, s, panels);
    let mut eps = vec![eps_now(x, &ct)?];
    for e in older {
        eps.push(rows(e)?);
    }
    Ok(rows(x)?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = |(k, &v): (usize, &f64)| {
                cs.alpha / ct.alpha * v + (0..c.len()).map(|j| c[j] * eps[j][i][k]).sum::<f64>()
            };
            r.iter().enumerate().map(f).collect()
        })
        .collect())
}

/// The first step ignores any history (stale at step 0) and is DDIM(η = 0):
/// x_s = (α_s/α_t) x_t + α_s (σ̃_s − σ̃_t) ε̂, one NFE; the history returned is [(t, ε̂)].
#[test]
fn first_step_is_ddim() -> Result<()> {
    let x = normals(1, 6, 2)?;
    let (t, s) = (1.0, 0.8);
    let mut stale = State::new(x.clone(), t, 0);
    stale.history = vec![entry(&Ou, 1.2, &normals(9, 6, 2)?)];
    for state in [State::new(x.clone(), t, 0), stale] {
        let had = state.history.len();
        let (next, nfe) = one_step(&Deis::default(), &Ou, &state, (t, s), (0, 10))?;
        assert_eq!(nfe, 1);
        let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
        let d = cs.alpha * (cs.sigma_tilde() - ct.sigma_tilde());
        let want: Vec<Vec<f64>> = rows(&x)?
            .iter()
            .zip(eps_now(&x, &ct)?)
            .map(|(r, e)| {
                r.iter()
                    .zip(e)
                    .map(|(v, e)| cs.alpha / ct.alpha * v + d * e)
                    .collect()
            })
            .collect();
        assert_close(&rows(&next.x)?, &want, 1e-12, "first step");
        assert_eq!(next.history.len(), 1);
        assert_eq!(next.history[0].t, t);
        let recorded = next.history[0].eps_hat.as_ref().expect("ε̂ kept");
        assert_close(&rows(recorded)?, &eps_now(&x, &ct)?, 1e-12, "recorded ε̂");
        assert_eq!(state.history.len(), had);
    }
    Ok(())
}

/// A middle step with two previous evaluations is the third-order tAB update, with C_j
/// against the composite two-point Gauss rule (2,000 panels: error ~1e-14); the second-order one with one.
/// The returned history is the last two evaluations, oldest first; the input is unchanged.
#[test]
fn middle_steps_match_the_integral() -> Result<()> {
    let x = normals(3, 5, 2)?;
    let (e1, e2) = (normals(7, 5, 2)?, normals(8, 5, 2)?);
    let (t2, t1, t, s) = (0.7, 0.6, 0.5, 0.35);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![entry(&Ou, t2, &e2), entry(&Ou, t1, &e1)];
    let (next, nfe) = one_step(&Deis::default(), &Ou, &state, (t, s), (4, 20))?;
    assert_eq!(nfe, 1);
    let want = expected(&Ou, &x, &[&e1, &e2], &[t, t1, t2], s, 2000)?;
    assert_close(&rows(&next.x)?, &want, 1e-11, "third-order step");
    let ts: Vec<f64> = next.history.iter().map(|e| e.t).collect();
    assert_eq!(ts, vec![t1, t]);
    assert_eq!(state.history.len(), 2);
    let second = Deis::new(Params { order: 2 })?;
    let (next, _) = one_step(&second, &Ou, &state, (t, s), (4, 20))?;
    let want = expected(&Ou, &x, &[&e1], &[t, t1], s, 2000)?;
    assert_close(&rows(&next.x)?, &want, 1e-11, "second-order step");
    assert_eq!(next.history.len(), 1);
    Ok(())
}

/// Across a knot (σ̃′ jumps from 1 to 2), the coefficients are the polynomial integrals on each
/// side (the two-point Gauss rule is exact for ℓ_j of degree 2): the quadrature splits at the SDE's knots.
#[test]
fn steps_across_knots_are_exact() -> Result<()> {
    let x = normals(4, 3, 2)?;
    let (e1, e2) = (normals(5, 3, 2)?, normals(6, 3, 2)?);
    let (t2, t1, t, s) = (1.1, 0.9, 0.7, 0.3);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![entry(&Kinked, t2, &e2), entry(&Kinked, t1, &e1)];
    let (next, _) = one_step(&Deis::default(), &Kinked, &state, (t, s), (4, 20))?;
    let want = expected(&Kinked, &x, &[&e1, &e2], &[t, t1, t2], s, 1)?;
    assert_close(&rows(&next.x)?, &want, 1e-13, "step across a knot");
    Ok(())
}

/// Warm-up: step k uses at most k previous evaluations, and at order 3 step 1 also corrects
/// step 0's DDIM update by the linear polynomial through (t_1, ε̂_1), (t, ε̂_0) on [t, t_1]:
/// k (ε̂_0 − ε̂_1) with k = (α_s/α_t) α_t (σ̃_t − σ̃_1) ∫ σ̃′ ℓ_t / ∫ σ̃′ (two-point Gauss here).
/// Below 15 steps the last step is DDIM and the one before it second order; at 15 steps and
/// more the last step keeps its order.
#[test]
fn warm_up_and_lower_order_final() -> Result<()> {
    let x = normals(10, 4, 2)?;
    let (e1, e2) = (normals(11, 4, 2)?, normals(12, 4, 2)?);
    let (t2, t1, t, s) = (0.4, 0.3, 0.2, 0.1);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![entry(&Ou, t2, &e2), entry(&Ou, t1, &e1)];
    let run = |order, step, steps| -> Result<Vec<Vec<f64>>> {
        let deis = Deis::new(Params { order })?;
        rows(&one_step(&deis, &Ou, &state, (t, s), (step, steps))?.0.x)
    };
    let first = expected(&Ou, &x, &[], &[t], s, 2000)?;
    let second = expected(&Ou, &x, &[&e1], &[t, t1], s, 2000)?;
    let third = expected(&Ou, &x, &[&e1, &e2], &[t, t1, t2], s, 2000)?;
    // The correction of step 0: α_t ∫_{t_1}^{t} σ̃′ ℓ_t dτ with ℓ_t(τ) = (τ − t_1)/(t − t_1),
    // by coefficients() with the nodes (t_1, t) over [t, t_1], carried to s by α_s/α_t.
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let k = cs.alpha / ct.alpha * coefficients(&Ou, &[t1, t], t, 2000)[1];
    let eps0 = eps_now(&x, &ct)?;
    let e1_rows = rows(&e1)?;
    let corrected: Vec<Vec<f64>> = second
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = |(j, v): (usize, &f64)| v + k * (eps0[i][j] - e1_rows[i][j]);
            r.iter().enumerate().map(f).collect()
        })
        .collect();
    assert_close(&run(3, 1, 20)?, &corrected, 1e-11, "step 1 of 20, order 3");
    assert_close(&run(2, 1, 20)?, &second, 1e-11, "step 1 of 20, order 2");
    assert_close(&run(3, 2, 20)?, &third, 1e-11, "step 2 of 20");
    assert_close(&run(3, 9, 10)?, &first, 1e-11, "last of 10");
    assert_close(&run(3, 8, 10)?, &second, 1e-11, "second last of 10");
    assert_close(&run(3, 7, 10)?, &third, 1e-11, "third last of 10");
    assert_close(&run(3, 14, 15)?, &third, 1e-11, "last of 15");
    Ok(())
}

/// History that is not this run's previous evaluations is an error naming `deis`: an entry
/// not earlier than the step's start, entries out of order, an entry without ε̂.
#[test]
fn foreign_history_is_an_error() -> Result<()> {
    let x = normals(13, 3, 2)?;
    let t = 0.5;
    let mut cases = Vec::new();
    for t_prev in [0.5, 0.4] {
        cases.push(vec![entry(&Ou, t_prev, &x)]);
    }
    cases.push(vec![entry(&Ou, 0.6, &x), entry(&Ou, 0.7, &x)]);
    cases.push(vec![HistoryEntry::x0(&Ou.coefs(0.6), x.clone())]);
    for history in cases {
        let mut state = State::new(x.clone(), t, 0);
        state.history = history;
        let err = one_step(&Deis::default(), &Ou, &state, (t, 0.35), (4, 20)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("deis") && msg.contains("history"), "{msg}");
    }
    Ok(())
}

/// `order` must be 1, 2 or 3: other values are `InvalidParam` errors naming the field; the
/// claims follow the order (on the Karras grid), the default is 60 Karras steps; the
/// registration builds from RON.
#[test]
fn parameters_claims_and_registration() -> Result<()> {
    for order in [0, 4, 9] {
        match Deis::new(Params { order }) {
            Err(Error::InvalidParam { plugin, field, .. }) => {
                assert_eq!((plugin.as_str(), field.as_str()), ("deis", "order"));
            }
            other => panic!("order {order}: {other:?}"),
        }
    }
    for order in 1..=3 {
        let c = Deis::new(Params { order })?.claims();
        assert_eq!(c.order, Order::Ode(order as f64));
        assert_eq!((c.nfe_per_step, c.stochastic, c.affine), (1, false, false));
        assert_eq!(c.natural_grid, GridKind::Karras { rho: 7.0 });
        assert_eq!(c.equation, Equation::ProbabilityFlowOde);
    }
    assert_eq!(Params::default().order, 3);
    let default = Deis::default().default_discretization(&Ou);
    let karras = GridKind::Karras { rho: 7.0 };
    assert_eq!((default.steps, default.grid), (60, karras));
    let reg = sdeflow_kernel::Registry::global()?;
    assert_eq!(reg.solver("deis", "()")?.claims(), Deis::default().claims());
    let two = reg.solver("deis", "(order: 2)")?.claims();
    assert_eq!(two.order, Order::Ode(2.0));
    assert!(reg.solver("deis", "(order: 4)").is_err());
    assert!(reg.solver("deis", "(ordr: 2)").is_err());
    Ok(())
}

/// The largest error at t_ε against the exact PF-ODE flow map (MATH.md §7) of `order` on
/// `sde`'s `grid`s of `steps` steps, each run costing one NFE per step.
fn pathwise(
    sde: Arc<dyn ForwardSde>,
    grid: GridKind,
    order: usize,
    steps: &[usize],
) -> Result<Vec<f64>> {
    let solver = Arc::new(Deis::new(Params { order })?);
    pathwise_errors(
        sde,
        solver,
        grid,
        &normals(14, 4, 2)?,
        steps,
        |n, _, out| assert_eq!(out.nfe, n as u64),
    )
}

/// Through the pipeline on λ-uniform grids (and Karras grids at order 3) the pathwise error
/// falls at the order claimed (tail fit ± 0.25). Order 3 owes its tail to the correction of step 0 at step 1: with plain
/// DDIM for step 0 the global error keeps a term O(h² dε̂/dλ|_T) = O(h² SNR(T)), and on [`Ou`]
/// (SNR(T) = 0.16) the tail over N = 512…2,048 read 2.45 (it reads 2.98 with the correction).
#[test]
fn converges_at_its_order() -> Result<()> {
    let steps = [16, 32, 64, 128, 256, 512, 1024];
    let karras = GridKind::Karras { rho: 7.0 };
    for (order, grid) in [
        (1, GridKind::LogSnr),
        (2, GridKind::LogSnr),
        (3, GridKind::LogSnr),
        (3, karras),
    ] {
        let errors = pathwise(Arc::new(Ou), grid, order, &steps)?;
        let p = tail_order(&steps, &errors).expect("three errors above 1e-11");
        eprintln!("deis order {order}, {grid}: errors {errors:?}, fitted {p:.3}");
        assert!((p - order as f64).abs() <= 0.25, "order {p}, {errors:?}");
    }
    Ok(())
}

/// The local error of one step from the exact history (ε̂ on the exact PF-ODE solution at
/// λ_t − 2δ, λ_t − δ, λ_t, stepping to λ_t + δ on [`Ou`]) is O(δ^{q+1}) for q = 1, 2, 3.
#[test]
fn local_error_is_of_order_q_plus_one() -> Result<()> {
    let model = Gaussian::default();
    let starts = normals(15, 3, 2)?;
    let at = |tau: f64| -> Result<Tensor> {
        let (c0, c) = (Ou.coefs(Ou.t_max()), Ou.coefs(tau));
        let v: Vec<Vec<f64>> = rows(&starts)?
            .iter()
            .map(|r| (0..2).map(|j| model.flow_map(r[j], j, &c0, &c)).collect())
            .collect();
        Ok(Tensor::new(v, &candle_core::Device::Cpu)?)
    };
    let local = |order: usize, delta: f64| -> Result<f64> {
        let lambda = Ou.log_snr(0.3);
        let t_at = |k: f64| Ou.t_of_log_snr(lambda + k * delta);
        let mut state = State::new(at(t_at(0.0))?, t_at(0.0), 0);
        for k in [-2.0, -1.0] {
            let eps = Tensor::new(
                eps_now(&at(t_at(k))?, &Ou.coefs(t_at(k)))?,
                &candle_core::Device::Cpu,
            )?;
            state.history.push(entry(&Ou, t_at(k), &eps));
        }
        let solver = Deis::new(Params { order })?;
        let (next, _) = one_step(&solver, &Ou, &state, (t_at(0.0), t_at(1.0)), (5, 20))?;
        let want = rows(&at(t_at(1.0))?)?;
        Ok(rows(&next.x)?
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max))
    };
    for order in 1..=3 {
        let slope = (local(order, 0.08)? / local(order, 0.04)?).log2();
        eprintln!("deis order {order}: local error exponent {slope:.3}");
        assert!(
            (slope - (order + 1) as f64).abs() <= 0.3,
            "order {order}: {slope}"
        );
    }
    Ok(())
}
