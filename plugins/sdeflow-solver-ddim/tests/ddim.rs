//! DDIM(η) against MATH.md §5: at η = 0 the first-order exponential integrator (pathwise order
//! 1 on λ-uniform grids, no noise drawn), at η = 1 DDPM's posterior sample, for any η the
//! noise coefficient c = η σ_s σ_{t|s}/σ_t; parameters, claims and the registration.
//!
//! The SDE, the parameterization and the score model are test-local (a plugin must not
//! depend on another plugin crate); their formulas are stated beside them.

use std::{path::Path, sync::Arc};

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Denoiser, Equation, Error, ForwardSde, GridKind, Order, Parameterization, Pipeline, Result,
    Schedule, ScoreModel, SdeFamily, Solver, SolverClaims, State, StepContext, TimeCoefs,
    noise::{
        ConstantNoise, NoiseRequest, NoiseSource, PhiloxNoise, Stream, philox_key,
        philox_normal_tensor,
    },
};
use sdeflow_solver_ddim::{Ddim, Params};

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

/// A noise source that fails: DDIM(η = 0) must never ask for noise.
#[derive(Debug)]
struct NoNoise;

impl NoiseSource for NoNoise {
    fn standard_normal(&self, _: &NoiseRequest, _: DType, _: &Device) -> Result<Tensor> {
        Err(Error::Msg("a deterministic step drew noise".into()))
    }
}

fn ddim(eta: f64) -> Result<Ddim> {
    Ddim::new(Params { eta })
}

fn normals(seed: u64, rows: usize) -> Result<Tensor> {
    let key = philox_key(seed, Stream::Exact);
    philox_normal_tensor(key, 0, rows, MEAN.len(), 0, DType::F64, &Device::Cpu)
}

fn rows(x: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(x.to_dtype(DType::F64)?.to_vec2::<f64>()?)
}

/// One step t → s of `solver` on `x` with `noise`: (x_s, draws taken, NFE).
fn one_step(
    solver: &dyn Solver,
    noise: &dyn NoiseSource,
    x: &Tensor,
    t: f64,
    s: f64,
) -> Result<(Tensor, u64, u64)> {
    let den = Denoiser::new(Arc::new(Gaussian), Arc::new(EpsParam), None, None);
    let ctx = StepContext::new(&Ou, &den, noise, 5, Ou.coefs(t), Ou.coefs(s), 3, 10);
    let step = solver.step(&ctx, &State::new(x.clone(), t, 0))?;
    Ok((step.state.x, ctx.draws_taken(), den.nfe()))
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

/// Step pairs t → s: large, moderate, near t_ε, and s ≈ t (where σ_t² − α_{t|s}² σ_s² cancels).
const PAIRS: [(f64, f64); 4] = [(1.0, 0.7), (0.6, 0.55), (0.01, 1e-3), (0.5, 0.5 - 1e-7)];

/// η = 0 is the exponential integrator x_s = (σ_s/σ_t) x_t + α_s (1 − e^{−h}) x̂₀ (MATH.md §5),
/// with x̂₀ in closed form: the DDIM form α_s x̂₀ + σ_s ε̂ agrees with it to 1e-12, one NFE, no draw.
#[test]
fn eta_zero_is_the_first_order_exponential_integrator() -> Result<()> {
    let x = normals(1, 6)?;
    for (t, s) in PAIRS {
        let (xs, draws, nfe) = one_step(&ddim(0.0)?, &NoNoise, &x, t, s)?;
        assert_eq!((draws, nfe), (0, 1));
        let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
        let h = cs.lambda - ct.lambda;
        let want: Vec<Vec<f64>> = rows(&x)?
            .iter()
            .map(|r| {
                let f = |(j, &xt): (usize, &f64)| {
                    cs.sigma / ct.sigma * xt - cs.alpha * (-h).exp_m1() * x0_exact(xt, j, &ct)
                };
                r.iter().enumerate().map(f).collect()
            })
            .collect();
        assert_close(&rows(&xs)?, &want, &format!("t = {t}, s = {s}"));
    }
    Ok(())
}

/// η = 1 is DDPM's posterior q(x_s | x_t, x̂₀) (MATH.md §5): the step with z = 0 is its mean
/// (α_{t|s} σ_s²/σ_t²) x_t + (α_s σ²_{t|s}/σ_t²) x̂₀, the step with z = 1 minus it is its
/// standard deviation σ_{t|s} σ_s/σ_t, with σ²_{t|s} = −expm1(−2(t − s)) (the OU closed form);
/// with Philox noise the step is mean + std · z for the z the context draws. All to 1e-12.
#[test]
fn eta_one_is_the_ddpm_posterior_sample() -> Result<()> {
    let x = normals(2, 5)?;
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
                    a_ts * s2s / s2t * xt + cs.alpha * var_ts / s2t * x0_exact(xt, j, &ct)
                };
                r.iter().enumerate().map(f).collect()
            })
            .collect();
        let (x0, draws, _) = one_step(&solver, &ConstantNoise(0.0), &x, t, s)?;
        let (x1, ..) = one_step(&solver, &ConstantNoise(1.0), &x, t, s)?;
        assert_eq!(draws, MEAN.len() as u64);
        let what = format!("t = {t}, s = {s}");
        assert_close(&rows(&x0)?, &mean, &format!("mean, {what}"));
        for (a, b) in rows(&x0)?.iter().flatten().zip(rows(&x1)?.iter().flatten()) {
            assert!(
                ((b - a) - std).abs() <= 1e-12 * (1.0 + a.abs()),
                "std, {what}"
            );
        }
        // Shared noise: the Philox step is mean + std · z with the context's own z.
        let (xp, ..) = one_step(&solver, &PhiloxNoise, &x, t, s)?;
        let den = Denoiser::new(Arc::new(Gaussian), Arc::new(EpsParam), None, None);
        let ctx = StepContext::new(&Ou, &den, &PhiloxNoise, 5, ct, cs, 3, 10);
        let z = rows(&ctx.standard_normal(&State::new(x.clone(), t, 0))?)?;
        let want: Vec<Vec<f64>> = mean
            .iter()
            .zip(&z)
            .map(|(m, z)| m.iter().zip(z).map(|(m, z)| m + std * z).collect())
            .collect();
        assert_close(&rows(&xp)?, &want, &format!("philox, {what}"));
    }
    Ok(())
}

/// For any η the noise coefficient is c = η σ_s σ_{t|s}/σ_t and the mean is
/// α_s x̂₀ + √(σ_s² − c²) ε̂ (MATH.md §5), with ε̂ = (x − α_t x̂₀)/σ_t; η = 2 is valid on a
/// step with η² (1 − e^{−2h}) ≤ 1 (here h ≈ 0.016) and rejected on a long one (h ≈ 0.66).
#[test]
fn noise_coefficient_for_any_eta() -> Result<()> {
    let x = normals(3, 4)?;
    for (eta, t, s) in [(0.3, 0.8, 0.6), (0.7, 0.05, 0.02), (2.0, 0.5, 0.49)] {
        let (ct, cs) = (Ou.coefs(t), Ou.coefs(s));
        let var_ts = -(-2.0 * (t - s)).exp_m1();
        let c = eta * cs.sigma * var_ts.sqrt() / ct.sigma;
        let keep = (cs.sigma * cs.sigma - c * c).sqrt();
        let mean: Vec<Vec<f64>> = rows(&x)?
            .iter()
            .map(|r| {
                let f = |(j, &xt): (usize, &f64)| {
                    let x0 = x0_exact(xt, j, &ct);
                    cs.alpha * x0 + keep * (xt - ct.alpha * x0) / ct.sigma
                };
                r.iter().enumerate().map(f).collect()
            })
            .collect();
        let (x0, ..) = one_step(&ddim(eta)?, &ConstantNoise(0.0), &x, t, s)?;
        let (x1, ..) = one_step(&ddim(eta)?, &ConstantNoise(1.0), &x, t, s)?;
        assert_close(&rows(&x0)?, &mean, &format!("mean, eta = {eta}"));
        for (a, b) in rows(&x0)?.iter().flatten().zip(rows(&x1)?.iter().flatten()) {
            assert!(
                ((b - a) - c).abs() <= 1e-12 * (1.0 + a.abs()),
                "c, eta = {eta}"
            );
        }
    }
    let err = one_step(&ddim(2.0)?, &ConstantNoise(0.0), &x, 1.0, 0.5).unwrap_err();
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
        natural_grid: Some(GridKind::LogSnr),
    };
    assert_eq!(ddim(0.0)?.claims(), ode);
    let sde = SolverClaims {
        order: Order::Sde {
            weak: 1.0,
            strong: 0.5,
        },
        stochastic: true,
        equation: Equation::ReverseSde,
        ..ode
    };
    assert_eq!(ddim(1.0)?.claims(), sde);
    assert_eq!(ddim(0.2)?.claims(), sde);
    let (uniform_500, uniform_1000) = (
        Schedule {
            steps: 500,
            grid: GridKind::Uniform,
        },
        Schedule {
            steps: 1000,
            grid: GridKind::Uniform,
        },
    );
    assert_eq!(ddim(0.0)?.default_schedule(&Ou), uniform_500);
    assert_eq!(ddim(1.0)?.default_schedule(&Ou), uniform_1000);
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
    Pipeline::builder()
        .sde(Arc::new(Ou))
        .param(Arc::new(EpsParam))
        .model(Arc::new(Gaussian))
        .solver(Arc::new(solver))
        .steps(steps)
        .grid(GridKind::LogSnr)
        .noise(noise)
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

/// η = 0 through the pipeline on λ-uniform grids: the pathwise error at t_ε against the
/// closed-form PF-ODE flow map x_s = α_s m + √(v_s/v_t)(x_t − α_t m) falls at order 1
/// (tail fit ±0.25), NFE counted = steps, and no noise is ever asked for.
#[test]
fn eta_zero_converges_at_order_one_on_log_snr_grids() -> Result<()> {
    let steps = [16, 32, 64, 128, 256, 512, 1024];
    let x_t = normals(4, 8)?;
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
        let out =
            pipeline(ddim(0.0)?, n, Arc::new(NoNoise))?.run(State::new(x_t.clone(), 1.0, 0))?;
        assert_eq!((out.nfe, out.state.draws), (n as u64, 0));
        let got = rows(&out.state.x)?;
        let err = got
            .iter()
            .flatten()
            .zip(exact.iter().flatten())
            .map(|(g, e)| (g - e).abs())
            .fold(0.0, f64::max);
        errors.push(err);
    }
    let p = tail_order(&steps, &errors);
    eprintln!("ddim(eta = 0) pathwise errors {errors:?}: order {p:.3}");
    assert!((p - 1.0).abs() <= 0.25, "order {p}, errors {errors:?}");
    Ok(())
}

/// η = 1 through the pipeline draws one normal per coordinate per step, counts one NFE per
/// step, and gives the same bits when run twice.
#[test]
fn eta_one_draws_once_per_step_and_reruns_identically() -> Result<()> {
    let x_t = normals(5, 3)?;
    let p = pipeline(ddim(1.0)?, 20, Arc::new(PhiloxNoise))?;
    let a = p.run(State::new(x_t.clone(), 1.0, 0))?;
    let b = p.run(State::new(x_t, 1.0, 0))?;
    assert_eq!((a.nfe, a.state.draws), (20, 20 * MEAN.len() as u64));
    let bits = |x: &Tensor| -> Result<Vec<u64>> {
        Ok(rows(x)?.iter().flatten().map(|v| v.to_bits()).collect())
    };
    assert_eq!(bits(&a.state.x)?, bits(&b.state.x)?);
    Ok(())
}

/// An f32 state stays f32 and agrees with the f64 step on the same input to f32 rounding.
#[test]
fn f32_state_stays_f32() -> Result<()> {
    let x32 = normals(6, 4)?.to_dtype(DType::F32)?;
    let (xs32, ..) = one_step(&ddim(0.5)?, &ConstantNoise(1.0), &x32, 0.4, 0.3)?;
    assert_eq!(xs32.dtype(), DType::F32);
    let x64 = x32.to_dtype(DType::F64)?;
    let (xs64, ..) = one_step(&ddim(0.5)?, &ConstantNoise(1.0), &x64, 0.4, 0.3)?;
    for (a, b) in rows(&xs32)?
        .iter()
        .flatten()
        .zip(rows(&xs64)?.iter().flatten())
    {
        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
    }
    Ok(())
}
