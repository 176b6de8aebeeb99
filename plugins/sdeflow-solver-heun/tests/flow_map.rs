//! Heun's method against the closed-form PF-ODE flow map of a single Gaussian
//! (MATH.md §7; DESIGN.md "Measuring sample quality honestly" (b)):
//! - one step equals EDM's Algorithm 1 without churn written out by hand;
//! - the pathwise error at t_ε falls at order 2 on a uniform grid;
//! - every step costs 2 NFE and draws no noise;
//! - the claims and defaults are as the crate states.
//!
//! The SDE, the parameterization and the score model are test-local (a plugin must not
//! depend on another plugin crate); their formulas are stated beside them.

use std::{path::Path, sync::Arc};

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Denoiser, Equation, ForwardSde, GridKind, Order, Parameterization, Registry, Result, Schedule,
    ScoreModel, SdeFamily, Solver, SolverClaims, State, StepContext, TimeCoefs,
    noise::ConstantNoise,
};
use sdeflow_solver_heun::{Heun, TABLEAU};

/// An Ornstein–Uhlenbeck forward SDE (VP with β ≡ 2): α = e^{−t}, σ = √(1 − e^{−2t}),
/// f = −1, g² = 2, T = 1, t_ε = 1e-3. [`sde_is_consistent`] checks MATH.md §1's identities.
#[derive(Debug)]
struct UnitOu;

impl ForwardSde for UnitOu {
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
}

/// ε-prediction (MATH.md §3, first row): ŝ = −ε̂/σ.
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

/// The data law N(m, s² I) in d = 2 (s = 0.3, as DESIGN.md advises: s = 1 under VP makes
/// the flow a pure translation).
const M: [f64; 2] = [1.0, -0.5];
const S: f64 = 0.3;

/// The marginal variance v(t) = α² s² + σ² of p_t = N(α m, v I) (MATH.md §7).
fn var(c: &TimeCoefs) -> f64 {
    c.alpha * c.alpha * S * S + c.sigma * c.sigma
}

/// The exact score ŝ = −(x − α m)/v of p_t, reported as ε̂ = −σ ŝ = σ (x − α m)/v.
#[derive(Debug)]
struct GaussianScore {
    mean: Tensor,
}

impl ScoreModel for GaussianScore {
    fn sample_shape(&self) -> Vec<usize> {
        vec![M.len()]
    }
    fn forward(&self, x: &Tensor, c: &TimeCoefs, _cond: Option<&Tensor>) -> Result<Tensor> {
        let centred = x.broadcast_sub(&self.mean.affine(c.alpha, 0.0)?)?;
        Ok(centred.affine(c.sigma / var(c), 0.0)?)
    }
    fn rows_independent(&self) -> bool {
        true
    }
    fn load(&mut self, _path: &Path) -> Result<()> {
        Ok(())
    }
}

fn denoiser() -> Result<Denoiser> {
    let mean = Tensor::new(&[M], &Device::Cpu)?;
    Ok(Denoiser::new(
        Arc::new(GaussianScore { mean }),
        Arc::new(EpsParam),
        None,
        None,
    ))
}

/// The PF-ODE drift F = f x − ½ g² ŝ = −x + (x − α m)/v of one coordinate (MATH.md §2).
fn drift(x: f64, m: f64, t: f64) -> f64 {
    let c = UnitOu.coefs(t);
    c.f * x + 0.5 * c.g2 * (x - c.alpha * m) / var(&c)
}

/// The exact flow map from t to s: x_s = α_s m + √(v_s/v_t) (x_t − α_t m). With y = x − α m,
/// y′ = (1/v − 1) y and v′ = 2 − 2v, so y/√v is constant along the flow.
fn flow_map(x: f64, m: f64, t: f64, s: f64) -> f64 {
    let (ct, cs) = (UnitOu.coefs(t), UnitOu.coefs(s));
    cs.alpha * m + (var(&cs) / var(&ct)).sqrt() * (x - ct.alpha * m)
}

/// Model evaluations per step, as MATH.md §5 counts them.
const STAGES: u64 = 2;

/// Starting points at T: rows of a `[4, 2]` batch, both signs and the mean's neighbourhood.
const X_T: [[f64; 2]; 4] = [[0.0, 0.0], [1.5, -2.0], [-1.0, 0.7], [2.5, 1.0]];

fn flat(x: &Tensor) -> Result<Vec<f64>> {
    Ok(x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// `steps` steps of `solver` on the uniform grid from T to t_ε, with noise that would turn
/// every value NaN if drawn; checks each step draws nothing and returns (x(t_ε), NFE).
fn solve(solver: &dyn Solver, steps: usize) -> Result<(Vec<f64>, u64)> {
    let sde = UnitOu;
    let den = denoiser()?;
    let noise = ConstantNoise(f64::NAN);
    let ts = GridKind::Uniform.times(&sde, steps)?;
    let mut state = State::new(Tensor::new(&X_T, &Device::Cpu)?, ts[0], 0);
    for (i, w) in ts.windows(2).enumerate() {
        let ctx = StepContext::new(
            &sde,
            &den,
            &noise,
            0,
            sde.coefs(w[0]),
            sde.coefs(w[1]),
            i,
            steps,
        );
        let step = solver.step(&ctx, &state)?;
        assert_eq!(ctx.draws_taken(), 0, "step {i} of {steps} drew noise");
        assert!(step.error_estimate.is_none());
        state = step.state;
        state.t = w[1];
        state.step = i + 1;
    }
    Ok((flat(&state.x)?, den.nfe()))
}

/// The largest error of `x` (at t_ε, from [`X_T`]) against the exact flow map.
fn max_error(x: &[f64]) -> f64 {
    let (t, s) = (UnitOu.t_max(), UnitOu.t_eps());
    let exact = X_T
        .iter()
        .flat_map(|row| row.iter().zip(M).map(move |(&x, m)| flow_map(x, m, t, s)));
    x.iter()
        .zip(exact)
        .map(|(got, want)| (got - want).abs())
        .fold(0.0, f64::max)
}

/// −(least-squares slope of log error against log N) over the last three points above 1e-11
/// (DESIGN.md "Orders": the tail fit).
fn tail_order(ns: &[usize], errs: &[f64]) -> f64 {
    let pts: Vec<(f64, f64)> = ns
        .iter()
        .zip(errs)
        .filter(|(_, e)| **e > 1e-11)
        .map(|(&n, &e)| ((n as f64).ln(), e.ln()))
        .collect();
    assert!(
        pts.len() >= 3,
        "fewer than three errors above 1e-11: {errs:?}"
    );
    let tail = &pts[pts.len() - 3..];
    let mx = tail.iter().map(|p| p.0).sum::<f64>() / 3.0;
    let my = tail.iter().map(|p| p.1).sum::<f64>() / 3.0;
    let sxy: f64 = tail.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = tail.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    -sxy / sxx
}

/// MATH.md §1: f = d log α/dt and g² = dσ²/dt − 2 f σ², by central differences (step 1e-5,
/// truncation ~1e-10; tolerance 1e-8).
#[test]
fn sde_is_consistent() -> Result<()> {
    let sde = UnitOu;
    let d = 1e-5;
    for t in [0.01, 0.1, 0.5, 0.9] {
        let dlog_alpha = (sde.alpha(t + d).ln() - sde.alpha(t - d).ln()) / (2.0 * d);
        let dsigma2 = (sde.sigma(t + d).powi(2) - sde.sigma(t - d).powi(2)) / (2.0 * d);
        let c = sde.coefs(t);
        assert!((dlog_alpha - c.f).abs() <= 1e-8, "t = {t}: {dlog_alpha}");
        let g2 = dsigma2 - 2.0 * c.f * c.sigma * c.sigma;
        assert!((g2 - c.g2).abs() <= 1e-8, "t = {t}: {g2}");
    }
    Ok(())
}

/// The reference itself: the flow map composes (t → u → s equals t → s to rounding) and its
/// s-derivative at s = t is the drift F (central differences, step 1e-5; tolerance 1e-8).
#[test]
fn flow_map_is_the_pf_ode_flow() -> Result<()> {
    let d = 1e-5;
    for (x, m) in [(1.5, 1.0), (-2.0, -0.5), (0.3, 1.0)] {
        for t in [0.01, 0.3, 0.9] {
            let via = flow_map(flow_map(x, m, 1.0, 0.6), m, 0.6, t);
            let direct = flow_map(x, m, 1.0, t);
            assert!((via - direct).abs() <= 1e-14 * direct.abs().max(1.0));
            let slope = (flow_map(x, m, t, t + d) - flow_map(x, m, t, t - d)) / (2.0 * d);
            let f = drift(x, m, t);
            assert!(
                (slope - f).abs() <= 1e-8 * f.abs().max(1.0),
                "{slope} vs {f}"
            );
        }
    }
    Ok(())
}

/// One step from t to s (h = t − s) equals EDM's Algorithm 1 without churn on each coordinate:
/// /// `d = F(x, t)`, `x̃ = x − h d`, `d′ = F(x̃, s)`, `x_s = x − h (d + d′)/2` (MATH.md §5).
/// Both sides round a few terms of size ≤ |x| (1 + h |F|/|x|) ≲ 10 |x| here: 1e-14 of |x|.
#[test]
fn one_step_equals_the_hand_written_formula() -> Result<()> {
    let sde = UnitOu;
    let solver = Heun::new()?;
    for (t, s) in [(1.0, 0.9), (0.3, 0.05), (0.01, 1e-3)] {
        let h = t - s;
        let den = denoiser()?;
        let noise = ConstantNoise(f64::NAN);
        let ctx = StepContext::new(&sde, &den, &noise, 0, sde.coefs(t), sde.coefs(s), 0, 1);
        let state = State::new(Tensor::new(&X_T, &Device::Cpu)?, t, 0);
        let got = flat(&solver.step(&ctx, &state)?.state.x)?;
        assert_eq!((den.nfe(), ctx.draws_taken()), (2, 0));
        let want = X_T.iter().flat_map(|row| {
            row.iter().zip(M).map(move |(&x, m)| {
                let f = |x: f64, t: f64| drift(x, m, t);
                let d = f(x, t);
                let x_tilde = x - h * d;
                let d_prime = f(x_tilde, s);
                x - h * (d + d_prime) / 2.0
            })
        });
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-14 * w.abs().max(1.0),
                "t = {t}: {g} vs {w}"
            );
        }
    }
    Ok(())
}

/// The pathwise error at t_ε against the exact flow map over N = 16 … 1,024 uniform steps
/// falls at order 2 (tail fit within ±0.25, DESIGN.md "Orders"); the counted NFE is
/// 2 × N and no step draws noise.
#[test]
fn pathwise_error_falls_at_order_2() -> Result<()> {
    let solver = Heun::new()?;
    let ns: Vec<usize> = (4..=10).map(|k| 1 << k).collect();
    let mut errs = Vec::new();
    for &n in &ns {
        let (x, nfe) = solve(&solver, n)?;
        assert_eq!(nfe, n as u64 * STAGES);
        errs.push(max_error(&x));
    }
    let order = tail_order(&ns, &errs);
    let shown: Vec<String> = errs.iter().map(|e| format!("{e:.3e}")).collect();
    println!(
        "Heun's method: N {ns:?}, errors [{}], tail order {order:.3}",
        shown.join(", ")
    );
    assert!(
        (order - 2.0).abs() <= 0.25,
        "order {order}, errors {errs:?}"
    );
    Ok(())
}

/// The crate's `# Claims`: order 2 on a uniform grid, 2 NFE per step, deterministic,
/// affine, the PF-ODE; 250 steps by default on the SDE's default grid.
#[test]
fn claims_and_default_schedule() -> Result<()> {
    let solver = Heun::new()?;
    assert_eq!(
        solver.claims(),
        SolverClaims {
            order: Order::Ode(2.0),
            nfe_per_step: 2,
            stochastic: false,
            affine: true,
            equation: Equation::ProbabilityFlowOde,
            natural_grid: Some(GridKind::Uniform),
        }
    );
    assert_eq!(
        solver.default_schedule(&UnitOu),
        Schedule {
            steps: 250,
            grid: UnitOu.default_grid()
        }
    );
    assert_eq!(TABLEAU.stages(), 2);
    TABLEAU.validate()
}

/// The `heun` registration builds from `()` and takes no fields.
#[test]
fn registration_builds_from_empty_params() -> Result<()> {
    let reg = Registry::global()?;
    let solver = reg.solver("heun", "()")?;
    assert_eq!(solver.claims(), Heun::new()?.claims());
    assert!(reg.solver("heun", "(steps: 10)").is_err());
    Ok(())
}
