//! iPNDM against its formula (the crate's `# Formula`) on the exact model of a Gaussian
//! (affine in x): the first step is DDIM(η = 0); a step with history is
//! x_s = (α_s/α_t) x_t + α_s (σ̃_s − σ̃_t) Σ_j b_j ε̂_j with Adams–Bashforth's fixed weights;
//! warm-up; history errors; parameters; and the orders the crate derives: global order 2 on
//! λ-uniform grids, local error O(δ⁵) where σ̃ is uniform and O(δ³) where it is not.

use std::sync::Arc;

use candle_core::Tensor;
use sdeflow_kernel::{
    Equation, Error, ForwardSde, GridKind, HistoryEntry, Order, Result, RunContext, Solver, State,
    StepSpan, TimeCoefs,
    testing::{Gaussian, NoNoise, Ou, assert_close, normals, pathwise_errors, rows, tail_order},
};
use sdeflow_solver_ipndm::{Ipndm, Params};

/// EDM's SDE on [0.05, 2]: α = 1, σ = t (f = 0, g² = 2t), so σ̃ = t and a grid uniform in t is
/// uniform in σ̃.
#[derive(Debug)]
struct Edm;

impl ForwardSde for Edm {
    fn t_max(&self) -> f64 {
        2.0
    }
    fn t_eps(&self) -> f64 {
        0.05
    }
    fn alpha(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        t
    }
    fn drift_coef(&self, _t: f64) -> f64 {
        0.0
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        2.0 * t
    }
    fn prior_std(&self) -> f64 {
        2.0
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        (-lambda).exp()
    }
}

/// One step t → s, step `step` of `steps`, from `state` on [`Ou`], reading
/// [`Gaussian::default`]: (the returned state, NFE).
fn one_step(
    solver: &Ipndm,
    state: &State,
    (t, s): (f64, f64),
    (step, steps): (usize, usize),
) -> Result<(State, u64)> {
    let den = Gaussian::default().denoiser();
    let ctx = RunContext::new(&Ou, &den, &NoNoise, 5).step(StepSpan {
        from: Ou.coefs(t),
        to: Ou.coefs(s),
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

fn entry(t: f64, eps: &Tensor) -> HistoryEntry {
    HistoryEntry::both(&Ou.coefs(t), eps.zeros_like().expect("zeros"), eps.clone())
}

/// x_s = (α_s/α_t) x_t + α_s (σ̃_s − σ̃_t) Σ_j b_j ε̂_j element by element, ε̂_0 in closed form
/// and ε̂_1… from `older` (newest first).
fn expected(x: &Tensor, older: &[&Tensor], b: &[f64], t: f64, s: f64) -> Result<Vec<Vec<f64>>> {
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let d = cs.alpha * (cs.sigma_tilde() - ct.sigma_tilde());
    let mut eps = vec![eps_now(x, &ct)?];
    for e in older {
        eps.push(rows(e)?);
    }
    Ok(rows(x)?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = |(k, &v): (usize, &f64)| {
                cs.alpha / ct.alpha * v + d * (0..b.len()).map(|j| b[j] * eps[j][i][k]).sum::<f64>()
            };
            r.iter().enumerate().map(f).collect()
        })
        .collect())
}

/// The first step ignores any history and is DDIM(η = 0), one NFE; the history returned is
/// [(t, ε̂)].
#[test]
fn first_step_is_ddim() -> Result<()> {
    let x = normals(1, 6, 2)?;
    let (t, s) = (1.0, 0.8);
    let mut stale = State::new(x.clone(), t, 0);
    stale.history = vec![entry(1.2, &normals(9, 6, 2)?)];
    for state in [State::new(x.clone(), t, 0), stale] {
        let had = state.history.len();
        let (next, nfe) = one_step(&Ipndm::default(), &state, (t, s), (0, 10))?;
        assert_eq!(nfe, 1);
        assert_close(
            &rows(&next.x)?,
            &expected(&x, &[], &[1.0], t, s)?,
            1e-12,
            "first",
        );
        assert_eq!(next.history.len(), 1);
        assert_eq!(next.history[0].t, t);
        let recorded = next.history[0].eps_hat.as_ref().expect("ε̂ kept");
        assert_close(&rows(recorded)?, &eps_now(&x, &Ou.coefs(t))?, 1e-12, "ε̂");
        assert_eq!(state.history.len(), had);
    }
    Ok(())
}

/// Steps 1, 2 and ≥ 3 with three previous evaluations use Adams–Bashforth of 2, 3 and 4
/// steps (warm-up), also on the last step; the history returned is the last three
/// evaluations, oldest first, and the input state is unchanged.
#[test]
fn warm_up_and_fixed_weights() -> Result<()> {
    let x = normals(3, 5, 2)?;
    let e: Vec<Tensor> = (7..10).map(|k| normals(k, 5, 2)).collect::<Result<_>>()?;
    let (t3, t2, t1, t, s) = (0.8, 0.7, 0.6, 0.5, 0.35);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![entry(t3, &e[2]), entry(t2, &e[1]), entry(t1, &e[0])];
    let ab = [
        vec![1.5, -0.5],
        vec![23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0],
        vec![55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
    ];
    let cases = [
        (1, 20, &ab[0], vec![t1, t]),
        (2, 20, &ab[1], vec![t2, t1, t]),
        (3, 20, &ab[2], vec![t2, t1, t]),
        (9, 10, &ab[2], vec![t2, t1, t]),
    ];
    for (step, steps, b, kept) in cases {
        let (next, nfe) = one_step(&Ipndm::default(), &state, (t, s), (step, steps))?;
        assert_eq!(nfe, 1);
        let older: Vec<&Tensor> = e.iter().take(b.len() - 1).collect();
        let want = expected(&x, &older, b, t, s)?;
        assert_close(
            &rows(&next.x)?,
            &want,
            1e-12,
            &format!("step {step} of {steps}"),
        );
        let ts: Vec<f64> = next.history.iter().map(|h| h.t).collect();
        assert_eq!(ts, kept, "history after step {step} of {steps}");
    }
    assert_eq!(state.history.len(), 3);
    let second = Ipndm::new(Params { order: 2 })?;
    let (next, _) = one_step(&second, &state, (t, s), (5, 20))?;
    assert_close(
        &rows(&next.x)?,
        &expected(&x, &[&e[0]], &ab[0], t, s)?,
        1e-12,
        "order 2",
    );
    let ts: Vec<f64> = next.history.iter().map(|h| h.t).collect();
    assert_eq!(ts, vec![t]);
    Ok(())
}

/// History that is not this run's previous evaluations is an error naming `ipndm`: an entry
/// not earlier than the step's start, entries out of order, an entry without ε̂.
#[test]
fn foreign_history_is_an_error() -> Result<()> {
    let x = normals(13, 3, 2)?;
    let t = 0.5;
    let mut cases = Vec::new();
    for t_prev in [0.5, 0.4] {
        cases.push(vec![entry(t_prev, &x)]);
    }
    cases.push(vec![entry(0.6, &x), entry(0.7, &x)]);
    cases.push(vec![HistoryEntry::x0(&Ou.coefs(0.6), x.clone())]);
    for history in cases {
        let mut state = State::new(x.clone(), t, 0);
        state.history = history;
        let err = one_step(&Ipndm::default(), &state, (t, 0.35), (4, 20)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ipndm") && msg.contains("history"), "{msg}");
    }
    Ok(())
}

/// `order` must be 1..=4: other values are `InvalidParam` errors naming the field; the claimed
/// ODE order is min(order, 2) (on the λ-uniform grid), the default is 50 Karras steps; the
/// registration builds from RON.
#[test]
fn parameters_claims_and_registration() -> Result<()> {
    for order in [0, 5] {
        match Ipndm::new(Params { order }) {
            Err(Error::InvalidParam { plugin, field, .. }) => {
                assert_eq!((plugin.as_str(), field.as_str()), ("ipndm", "order"));
            }
            other => panic!("order {order}: {other:?}"),
        }
    }
    for (order, claim) in [(1, 1.0), (2, 2.0), (3, 2.0), (4, 2.0)] {
        let c = Ipndm::new(Params { order })?.claims();
        assert_eq!(c.order, Order::Ode(claim));
        assert_eq!((c.nfe_per_step, c.stochastic, c.affine), (1, false, false));
        assert_eq!(c.natural_grid, GridKind::LogSnr);
        assert_eq!(c.equation, Equation::ProbabilityFlowOde);
    }
    assert_eq!(Params::default().order, 4);
    let default = Ipndm::default().default_discretization(&Ou);
    let karras = GridKind::Karras { rho: 7.0 };
    assert_eq!((default.steps, default.grid), (50, karras));
    let reg = sdeflow_kernel::Registry::global()?;
    assert_eq!(
        reg.solver("ipndm", "()")?.claims(),
        Ipndm::default().claims()
    );
    assert!(reg.solver("ipndm", "(order: 3)").is_ok());
    assert!(reg.solver("ipndm", "(order: 5)").is_err());
    assert!(reg.solver("ipndm", "(ordr: 2)").is_err());
    Ok(())
}

/// The pathwise error at t_ε of `order` against the exact PF-ODE flow map on `sde`'s `grid`.
fn errors(
    sde: Arc<dyn ForwardSde>,
    grid: GridKind,
    order: usize,
    ns: &[usize],
) -> Result<Vec<f64>> {
    let solver = Arc::new(Ipndm::new(Params { order })?);
    pathwise_errors(sde, solver, grid, &normals(14, 4, 2)?, ns, |n, _, out| {
        assert_eq!(out.nfe, n as u64)
    })
}

/// The crate's derivation, globally: on λ-uniform grids (σ̃ geometric) orders 2 and 4 both
/// converge at order 2, and order 1 at order 1.
#[test]
fn order_two_on_log_snr_grids() -> Result<()> {
    let ns = [16, 32, 64, 128, 256];
    for (order, claim) in [(1, 1.0), (2, 2.0), (4, 2.0)] {
        let e = errors(Arc::new(Ou), GridKind::LogSnr, order, &ns)?;
        let p = tail_order(&ns, &e).expect("three errors above 1e-11");
        eprintln!("ipndm order {order}, log-SNR: {e:?}, fitted {p:.3}");
        assert!((p - claim).abs() <= 0.25, "order {order}: {p}, {e:?}");
    }
    Ok(())
}

/// The local error of one four-step update from the exact history (ε̂ on the exact PF-ODE
/// solution at t + 3δ, t + 2δ, t + δ, t, stepping to t − δ in σ̃ = t on [`Edm`]): Adams–
/// Bashforth's O(δ⁵) where σ̃ is uniform, and the crate's O(δ³) (δ³ G′ φ″/12) where it is
/// geometric (σ̃ = e^{kδ}, as on a λ-uniform grid).
#[test]
fn local_error_on_uniform_and_geometric_sigma_tilde() -> Result<()> {
    let model = Gaussian::default();
    let starts = Tensor::new(
        &[[0.0f64, 0.0], [1.5, -2.0], [-1.0, 0.7]],
        &candle_core::Device::Cpu,
    )?;
    let at = |tau: f64| -> Result<Tensor> {
        let (c0, c) = (Edm.coefs(Edm.t_max()), Edm.coefs(tau));
        let v: Vec<Vec<f64>> = rows(&starts)?
            .iter()
            .map(|r| (0..2).map(|j| model.flow_map(r[j], j, &c0, &c)).collect())
            .collect();
        Ok(Tensor::new(v, &candle_core::Device::Cpu)?)
    };
    let local = |taus: [f64; 5]| -> Result<f64> {
        let [t3, t2, t1, t, s] = taus;
        let mut state = State::new(at(t)?, t, 0);
        for tau in [t3, t2, t1] {
            let eps = eps_now(&at(tau)?, &Edm.coefs(tau))?;
            let eps = Tensor::new(eps, &candle_core::Device::Cpu)?;
            state
                .history
                .push(HistoryEntry::both(&Edm.coefs(tau), eps.zeros_like()?, eps));
        }
        let den = model.denoiser();
        let ctx = RunContext::new(&Edm, &den, &NoNoise, 0).step(StepSpan {
            from: Edm.coefs(t),
            to: Edm.coefs(s),
            step: 5,
            steps: 20,
        });
        let got = rows(&Ipndm::default().step(&ctx, &state)?.state.x)?;
        let want = rows(&at(s)?)?;
        Ok(got
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max))
    };
    let slope = |grid: &dyn Fn(f64) -> [f64; 5]| -> Result<f64> {
        let (e1, e2) = (local(grid(0.04))?, local(grid(0.02))?);
        Ok((e1 / e2).log2())
    };
    let uniform = slope(&|d| [1.0 + 3.0 * d, 1.0 + 2.0 * d, 1.0 + d, 1.0, 1.0 - d])?;
    let geometric = slope(&|d| [(3.0 * d).exp(), (2.0 * d).exp(), d.exp(), 1.0, (-d).exp()])?;
    eprintln!("local error exponents: uniform σ̃ {uniform:.3}, geometric σ̃ {geometric:.3}");
    assert!((uniform - 5.0).abs() <= 0.3, "uniform: {uniform}");
    assert!((geometric - 3.0).abs() <= 0.3, "geometric: {geometric}");
    Ok(())
}
