//! DPM-Solver++(2M) against MATH.md §5: a middle step is the 2M update with
//! r = h_prev/h, the first and last steps are DDIM(η = 0)'s first-order exponential integrator
//! step, the returned history is [(λ_t, x̂₀_now)] and the input state is left alone; through the
//! pipeline the pathwise error falls at order 2 on λ-uniform grids, one NFE per step, no noise,
//! and reruns give the same bits.
//!
//! The SDE, the parameterization and the score model are test-local (a plugin must not
//! depend on another plugin crate); their formulas are stated beside them.

use std::{path::Path, sync::Arc};

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Denoiser, Equation, Error, ForwardSde, GridKind, HistoryEntry, Order, Parameterization,
    Pipeline, Result, Schedule, ScoreModel, SdeFamily, Solver, SolverClaims, State, StepContext,
    TimeCoefs,
    noise::{NoiseRequest, NoiseSource, Stream, philox_key, philox_normal_tensor},
};
use sdeflow_solver_dpmpp_2m::DpmSolverPp2m;

/// The Ornstein–Uhlenbeck VP SDE (β = 2): α = e^{−t}, σ = √(1 − e^{−2t}), f = −1, g² = 2
/// (MATH.md §1: f = d log α/dt = −1, g² = dσ²/dt − 2fσ² = 2e^{−2t} + 2σ² = 2),
/// λ = log(α/σ) = −½ log(expm1(2t)), inverted in closed form as t = ½ log1p(e^{−2λ}).
/// Its transition variance is σ²_{t|s} = σ_t² − e^{−2(t−s)} σ_s² = −expm1(−2(t − s)).
#[derive(Debug)]
struct Ou;

impl ForwardSde for Ou {
    fn family(&self) -> SdeFamily {
        SdeFamily::VariancePreserving
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn t_eps(&self) -> f64 {
        1e-3
    }
    fn alpha(&self, t: f64) -> f64 {
        (-t).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        (-(-2.0 * t).exp_m1()).sqrt()
    }
    fn drift_coef(&self, _t: f64) -> f64 {
        -1.0
    }
    fn diffusion_sq(&self, _t: f64) -> f64 {
        2.0
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
    fn log_snr(&self, t: f64) -> f64 {
        -0.5 * (2.0 * t).exp_m1().ln()
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        0.5 * (-2.0 * lambda).exp().ln_1p()
    }
}

/// ε-prediction (MATH.md §3, first row); x̂₀ = (x − σ ε̂)/α through the kernel's conversion.
#[derive(Debug)]
struct EpsParam;

impl Parameterization for EpsParam {
    fn target(&self, _x0: &Tensor, eps: &Tensor, _c: &TimeCoefs) -> Result<Tensor> {
        Ok(eps.clone())
    }
    fn to_eps(&self, out: &Tensor, _x: &Tensor, _c: &TimeCoefs) -> Result<Tensor> {
        Ok(out.clone())
    }
    fn from_eps(&self, eps: &Tensor, _x: &Tensor, _c: &TimeCoefs) -> Result<Tensor> {
        Ok(eps.clone())
    }
    fn eps_loss_scale(&self, _c: &TimeCoefs) -> f64 {
        1.0
    }
}

/// p₀ = N(m, s² I): p_t = N(α m, v I), v = α² s² + σ² (MATH.md §7).
const MEAN: [f64; 2] = [1.0, -0.5];
const STD: f64 = 0.3;

fn var(c: &TimeCoefs) -> f64 {
    c.alpha * c.alpha * STD * STD + c.sigma * c.sigma
}

/// The exact model of p₀ = N(m, s² I): ŝ = −(x − α m)/v, reported as ε̂ = −σ ŝ.
#[derive(Debug)]
struct Gaussian;

impl ScoreModel for Gaussian {
    fn sample_shape(&self) -> Vec<usize> {
        vec![MEAN.len()]
    }
    fn forward(&self, x: &Tensor, c: &TimeCoefs, _cond: Option<&Tensor>) -> Result<Tensor> {
        let m = Tensor::new(&MEAN, x.device())?.to_dtype(x.dtype())?;
        let centred = x.broadcast_sub(&m.affine(c.alpha, 0.0)?)?;
        Ok(centred.affine(c.sigma / var(c), 0.0)?)
    }
    fn rows_independent(&self) -> bool {
        true
    }
    fn load(&mut self, _path: &Path) -> Result<()> {
        Ok(())
    }
}

/// Tweedie's x̂₀ = E[x₀ | x_t] = m + α s² (x − α m)/v for coordinate j.
fn x0_exact(x: f64, j: usize, c: &TimeCoefs) -> f64 {
    MEAN[j] + c.alpha * STD * STD * (x - c.alpha * MEAN[j]) / var(c)
}

/// A noise source that fails: DPM-Solver++(2M) is deterministic and must never ask for noise.
#[derive(Debug)]
struct NoNoise;

impl NoiseSource for NoNoise {
    fn standard_normal(&self, _: &NoiseRequest, _: DType, _: &Device) -> Result<Tensor> {
        Err(Error::Msg("a deterministic step drew noise".into()))
    }
}

fn normals(seed: u64, rows: usize) -> Result<Tensor> {
    let key = philox_key(seed, Stream::Exact);
    philox_normal_tensor(key, 0, rows, MEAN.len(), 0, DType::F64, &Device::Cpu)
}

fn rows(x: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(x.to_dtype(DType::F64)?.to_vec2::<f64>()?)
}

/// |got − want| ≤ 1e-12 (1 + |want|) elementwise.
fn assert_close(got: &[Vec<f64>], want: &[Vec<f64>], what: &str) {
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!(
            (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
            "{what}: {g} vs {w}"
        );
    }
}

/// One step t → s, step `step` of `steps`, from `state`: (the returned state, NFE).
fn one_step(state: &State, t: f64, s: f64, step: usize, steps: usize) -> Result<(State, u64)> {
    let den = Denoiser::new(Arc::new(Gaussian), Arc::new(EpsParam), None, None);
    let (from, to) = (Ou.coefs(t), Ou.coefs(s));
    let ctx = StepContext::new(&Ou, &den, &NoNoise, 5, from, to, step, steps);
    let step = DpmSolverPp2m.step(&ctx, state)?;
    assert!(step.error_estimate.is_none());
    Ok((step.state, den.nfe()))
}

/// The exponential-integrator update x_s = (σ_s/σ_t) x_t + α_s (1 − e^{−h}) D (MATH.md §5),
/// computed here element by element with D = `d(row, j, x̂₀_now)` and x̂₀_now in closed form.
fn exp_step(
    x: &Tensor,
    t: f64,
    s: f64,
    d: impl Fn(usize, usize, f64) -> f64,
) -> Result<Vec<Vec<f64>>> {
    let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
    let h = cs.lambda - ct.lambda;
    Ok(rows(x)?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = |(j, &xt): (usize, &f64)| {
                let big_d = d(i, j, x0_exact(xt, j, &ct));
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

fn entry(t: f64, x0_hat: Tensor) -> HistoryEntry {
    HistoryEntry {
        lambda: Ou.log_snr(t),
        x0_hat,
    }
}

/// The first step (no history, or a stale history handed in at step 0) is DDIM(η = 0)'s step,
/// one NFE; the returned history is [(λ_t, x̂₀(x_t, t))] and the input keeps its own history.
#[test]
fn first_step_is_first_order() -> Result<()> {
    let x = normals(1, 6)?;
    let (t, s) = (1.0, 0.8);
    let fresh = State::new(x.clone(), t, 0);
    let mut stale = fresh.clone();
    stale.history = vec![entry(1.2, normals(9, 6)?)];
    for state in [fresh, stale] {
        let had = state.history.len();
        let (next, nfe) = one_step(&state, t, s, 0, 10)?;
        assert_eq!(nfe, 1);
        assert_close(&rows(&next.x)?, &first_order(&x, t, s)?, "first step");
        assert_eq!(next.history.len(), 1);
        assert_eq!(next.history[0].lambda, Ou.coefs(t).lambda);
        let ct = Ou.coefs(t);
        let x0: Vec<Vec<f64>> = rows(&x)?
            .iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(j, &v)| x0_exact(v, j, &ct))
                    .collect()
            })
            .collect();
        assert_close(&rows(&next.history[0].x0_hat)?, &x0, "recorded x̂₀");
        assert_eq!(state.history.len(), had);
    }
    Ok(())
}

/// The last step ignores the history: it is DDIM(η = 0)'s step.
#[test]
fn last_step_is_first_order() -> Result<()> {
    let x = normals(2, 5)?;
    let (t, s) = (0.01, 1e-3);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![entry(0.02, normals(8, 5)?)];
    let (next, nfe) = one_step(&state, t, s, 9, 10)?;
    assert_eq!(nfe, 1);
    assert_close(&rows(&next.x)?, &first_order(&x, t, s)?, "last step");
    assert_eq!(next.history[0].lambda, Ou.coefs(t).lambda);
    Ok(())
}

/// A middle step with history is Lu et al.'s Alg. 2 update: r = h_prev/h,
/// D = (1 + 1/(2r)) x̂₀_now − (1/(2r)) x̂₀_prev (MATH.md §5); it differs from the first-order
/// step, and the input state's history is left as it was.
#[test]
fn middle_step_is_the_2m_update() -> Result<()> {
    let x = normals(3, 5)?;
    let prev = normals(7, 5)?;
    let (t_prev, t, s) = (0.6, 0.5, 0.35);
    let mut state = State::new(x.clone(), t, 0);
    state.history = vec![entry(t_prev, prev.clone())];
    let (next, nfe) = one_step(&state, t, s, 4, 10)?;
    assert_eq!(nfe, 1);
    let h = Ou.log_snr(s) - Ou.log_snr(t);
    let h_prev = Ou.log_snr(t) - Ou.log_snr(t_prev);
    let r = h_prev / h;
    let prev_rows = rows(&prev)?;
    let want = exp_step(&x, t, s, |i, j, x0| {
        (1.0 + 1.0 / (2.0 * r)) * x0 - prev_rows[i][j] / (2.0 * r)
    })?;
    let got = rows(&next.x)?;
    assert_close(&got, &want, "2M step");
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
    let x = normals(4, 3)?;
    for t_prev in [0.5, 0.4] {
        let mut state = State::new(x.clone(), 0.5, 0);
        state.history = vec![entry(t_prev, x.clone())];
        let err = one_step(&state, 0.5, 0.35, 4, 10).unwrap_err();
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
            natural_grid: Some(GridKind::LogSnr),
        }
    );
    assert_eq!(
        DpmSolverPp2m.default_schedule(&Ou),
        Schedule {
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
    Pipeline::builder()
        .sde(Arc::new(Ou))
        .param(Arc::new(EpsParam))
        .model(Arc::new(Gaussian))
        .solver(Arc::new(DpmSolverPp2m))
        .steps(steps)
        .grid(GridKind::LogSnr)
        .noise(Arc::new(NoNoise))
        .chunk_rows(None)
        .dtype(DType::F64)
        .build()
}

/// The fitted order p of err ≈ C N^{−p} on the last three points above 1e-11 (DESIGN.md
/// "Orders"), least squares in log–log.
fn tail_order(steps: &[usize], errors: &[f64]) -> f64 {
    let pts: Vec<(f64, f64)> = steps
        .iter()
        .zip(errors)
        .filter(|(_, e)| **e > 1e-11)
        .map(|(n, e)| ((*n as f64).ln(), e.ln()))
        .collect();
    let tail = &pts[pts.len() - 3..];
    let mx = tail.iter().map(|p| p.0).sum::<f64>() / 3.0;
    let my = tail.iter().map(|p| p.1).sum::<f64>() / 3.0;
    let sxy: f64 = tail.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = tail.iter().map(|p| (p.0 - mx).powi(2)).sum();
    -sxy / sxx
}

/// Through the pipeline on λ-uniform grids, the pathwise error at t_ε against the closed-form
/// PF-ODE flow map x_s = α_s m + √(v_s/v_t)(x_t − α_t m) falls at order 2 (tail fit ±0.25);
/// NFE counted = steps, no noise asked for, and the final history is the last step's start.
#[test]
fn converges_at_order_two_on_log_snr_grids() -> Result<()> {
    let steps = [16, 32, 64, 128, 256, 512, 1024];
    let x_t = normals(5, 8)?;
    let (ct, ce) = (Ou.coefs(1.0), Ou.coefs(1e-3));
    let ratio = (var(&ce) / var(&ct)).sqrt();
    let exact: Vec<Vec<f64>> = rows(&x_t)?
        .iter()
        .map(|r| {
            let f = |(j, &x): (usize, &f64)| ce.alpha * MEAN[j] + ratio * (x - ct.alpha * MEAN[j]);
            r.iter().enumerate().map(f).collect()
        })
        .collect();
    let mut errors = Vec::new();
    for &n in &steps {
        let p = pipeline(n)?;
        let out = p.run(State::new(x_t.clone(), 1.0, 0))?;
        assert_eq!((out.nfe, out.state.draws), (n as u64, 0));
        assert_eq!(out.state.history.len(), 1);
        assert_eq!(out.state.history[0].lambda, Ou.log_snr(p.times()[n - 1]));
        let err = rows(&out.state.x)?
            .iter()
            .flatten()
            .zip(exact.iter().flatten())
            .map(|(g, e)| (g - e).abs())
            .fold(0.0, f64::max);
        errors.push(err);
    }
    let p = tail_order(&steps, &errors);
    eprintln!("dpmpp_2m pathwise errors {errors:?}: order {p:.3}");
    assert!((p - 2.0).abs() <= 0.25, "order {p}, errors {errors:?}");
    Ok(())
}

/// The history is threaded through the state: running the pipeline twice gives the same bits,
/// and so does a hand-written loop that passes each returned state to the next step.
#[test]
fn history_is_threaded_and_reruns_are_identical() -> Result<()> {
    let n = 25;
    let x_t = normals(6, 4)?;
    let p = pipeline(n)?;
    let bits = |x: &Tensor| -> Result<Vec<u64>> {
        Ok(rows(x)?.iter().flatten().map(|v| v.to_bits()).collect())
    };
    let a = bits(&p.run(State::new(x_t.clone(), 1.0, 0))?.state.x)?;
    let b = bits(&p.run(State::new(x_t.clone(), 1.0, 0))?.state.x)?;
    assert_eq!(a, b);
    let den = Denoiser::new(Arc::new(Gaussian), Arc::new(EpsParam), None, None);
    let mut state = State::new(x_t, 1.0, 0);
    for i in 0..n {
        let (from, to) = (Ou.coefs(p.times()[i]), Ou.coefs(p.times()[i + 1]));
        let ctx = StepContext::new(&Ou, &den, &NoNoise, 0, from, to, i, n);
        state = DpmSolverPp2m.step(&ctx, &state)?.state;
    }
    assert_eq!(bits(&state.x)?, a);
    Ok(())
}
