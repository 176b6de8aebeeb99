//! Fixtures for plugin tests, so that a plugin crate tests itself without depending on another
//! plugin: an SDE with closed forms, the ε parameterization, the exact model of a single
//! Gaussian, one-step helpers. Third-party plugin authors use them the same way.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::{
    At, Denoiser, Error, ForwardSde, Lin, Parameterization, PerRow, Result, RunContext, ScoreModel,
    Solver, State, StepSpan, TargetLin, TimeCoefs,
    noise::{NoiseRequest, NoiseSource, Stream, philox_key, philox_normal_tensor},
};

/// The Ornstein–Uhlenbeck VP SDE (β = 2) on [10⁻³, 1]: α = e^{−t}, σ = √(1 − e^{−2t}),
/// f = −1, g² = 2 (f = d log α/dt = −1, g² = dσ²/dt − 2fσ² = 2e^{−2t} + 2σ² = 2),
/// λ = −½ log(expm1(2t)), inverted in closed form as t = ½ log1p(e^{−2λ}). Its transition
/// from s to t has α_{t|s} = e^{−(t−s)} and σ²_{t|s} = −expm1(−2(t − s)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ou;

impl ForwardSde for Ou {
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

/// ε-prediction (MATH.md §3, first row): the output is ε̂.
#[derive(Debug, Clone, Copy, Default)]
pub struct EpsParam;

impl Parameterization for EpsParam {
    fn eps(&self, _c: &TimeCoefs) -> Lin {
        Lin { out: 1.0, x: 0.0 }
    }
    fn target(&self, _c: &TimeCoefs) -> TargetLin {
        TargetLin { x0: 0.0, eps: 1.0 }
    }
}

/// The exact model of p₀ = N(m, s² I) (MATH.md §7): p_t = N(α m, v I) with v = α² s² + σ²,
/// ŝ = −(x − α m)/v, reported in ε as ε̂ = −σ ŝ.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    /// The mean m.
    pub mean: Vec<f64>,
    /// The per-coordinate std s.
    pub std: f64,
}

impl Default for Gaussian {
    /// m = (1, −0.5), s = 0.3: the conformance single Gaussian.
    fn default() -> Self {
        Self {
            mean: vec![1.0, -0.5],
            std: 0.3,
        }
    }
}

impl Gaussian {
    /// v = α² s² + σ² at `c`.
    pub fn var(&self, c: &TimeCoefs) -> f64 {
        c.alpha * c.alpha * self.std * self.std + c.sigma * c.sigma
    }

    /// Tweedie's x̂₀ = m + α s² (x − α m)/v for coordinate `j`.
    pub fn x0(&self, x: f64, j: usize, c: &TimeCoefs) -> f64 {
        self.mean[j] + c.alpha * self.std * self.std * (x - c.alpha * self.mean[j]) / self.var(c)
    }

    /// The exact score −(x − α m_j)/v of coordinate `j`.
    pub fn score(&self, x: f64, j: usize, c: &TimeCoefs) -> f64 {
        -(x - c.alpha * self.mean[j]) / self.var(c)
    }

    /// The PF-ODE drift F = f x − ½ g² ŝ of coordinate `j` at `c` (MATH.md §2), the right-hand
    /// side an ODE solver integrates.
    pub fn pf_ode_drift(&self, x: f64, j: usize, c: &TimeCoefs) -> f64 {
        c.f * x - 0.5 * c.g2 * self.score(x, j, c)
    }

    /// The exact PF-ODE flow map of coordinate `j` from `from` to `to`:
    /// x_s = α_s m + √(v_s/v_t) (x_t − α_t m). On any linear SDE y = x − α m has
    /// y′ = (f + g²/(2v)) y and v′ = 2fv + g², so y/√v is constant along the flow.
    pub fn flow_map(&self, x: f64, j: usize, from: &TimeCoefs, to: &TimeCoefs) -> f64 {
        let m = self.mean[j];
        to.alpha * m + (self.var(to) / self.var(from)).sqrt() * (x - from.alpha * m)
    }

    /// The closed-form W2 between N(mean, diag(var)) and the exact marginal p_t = N(α m, v I)
    /// at `c`: √(Σ_j (mean_j − α m_j)² + (√var_j − √v)²).
    pub fn w2_to_marginal(&self, mean: &[f64], var: &[f64], c: &TimeCoefs) -> f64 {
        let v = self.var(c).sqrt();
        mean.iter()
            .zip(var)
            .zip(&self.mean)
            .map(|((mu, var), m)| (mu - c.alpha * m).powi(2) + (var.sqrt() - v).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// A denoiser reading this model through [`EpsParam`].
    pub fn denoiser(&self) -> Denoiser {
        Denoiser::new(Arc::new(self.clone()), Arc::new(EpsParam), None, None)
    }
}

impl ScoreModel for Gaussian {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.mean.len()]
    }
    fn forward(&self, x: &Tensor, at: &At, _cond: Option<&Tensor>) -> Result<Tensor> {
        let m = Tensor::new(self.mean.as_slice(), x.device())?.to_dtype(x.dtype())?;
        match &at.time {
            PerRow::Call(c) => {
                let centred = x.broadcast_sub(&m.affine(c.alpha, 0.0)?)?;
                Ok(centred.affine(c.sigma / self.var(c), 0.0)?)
            }
            time => {
                let col = |f: &dyn Fn(&TimeCoefs) -> f64| -> Result<Tensor> {
                    time.map(f)
                        .column(2, x.dtype(), x.device())?
                        .ok_or_else(|| Error::Msg("per-row time without rows".into()))
                };
                let mean = col(&|c| c.alpha)?.broadcast_mul(&m.unsqueeze(0)?)?;
                let scale = col(&|c| c.sigma / self.var(c))?;
                Ok((x - mean)?.broadcast_mul(&scale)?)
            }
        }
    }
    fn rows_independent(&self) -> bool {
        true
    }
}

/// A noise source that fails: for steps that must never draw.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNoise;

impl NoiseSource for NoNoise {
    fn standard_normal(&self, _: &NoiseRequest, _: DType, _: &Device) -> Result<Tensor> {
        Err(Error::Msg("a deterministic step drew noise".into()))
    }
}

/// `rows` × `cols` standard normals (f64, CPU) keyed by `seed`.
pub fn normals(seed: u64, rows: usize, cols: usize) -> Result<Tensor> {
    let key = philox_key(seed, Stream::Exact);
    philox_normal_tensor(key, 0, rows, cols, 0, DType::F64, &Device::Cpu)
}

/// A 2-D tensor's rows as f64.
pub fn rows(x: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(x.to_dtype(DType::F64)?.to_vec2::<f64>()?)
}

/// A tensor's entries as f64, row-major.
pub fn flat(x: &Tensor) -> Result<Vec<f64>> {
    Ok(x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

/// What [`one_step`] returns.
#[derive(Debug)]
pub struct OneStep {
    /// x at the step's end.
    pub x: Tensor,
    /// Draw indices taken.
    pub draws: u64,
    /// Calls to `standard_normal`.
    pub draw_calls: u64,
    /// Model evaluations.
    pub nfe: u64,
}

/// One step t → s of `solver` on `x` under `sde`, reading `model` (ε), with `noise` and
/// seed 5, as step 3 of 10.
pub fn one_step(
    solver: &dyn Solver,
    sde: &dyn ForwardSde,
    model: &Gaussian,
    noise: &dyn NoiseSource,
    x: &Tensor,
    t: f64,
    s: f64,
) -> Result<OneStep> {
    let den = model.denoiser();
    let ctx = RunContext::new(sde, &den, noise, 5).step(StepSpan {
        from: sde.coefs(t),
        to: sde.coefs(s),
        step: 3,
        steps: 10,
    });
    let step = solver.step(&ctx, &State::new(x.clone(), t, 0))?;
    Ok(OneStep {
        x: step.state.x,
        draws: ctx.draws_taken(),
        draw_calls: ctx.draw_calls(),
        nfe: den.nfe(),
    })
}

/// Step `step` of `steps`, t → s, of a fixed-step `solver` from `state` (its history and
/// extras included) on [`Ou`], reading [`Gaussian::default`] with no noise (seed 5): the
/// returned state and the NFE it cost. A multistep solver's step tests read through this.
pub fn ou_step(
    solver: &dyn Solver,
    state: &State,
    (t, s): (f64, f64),
    step: usize,
    steps: usize,
) -> Result<(State, u64)> {
    let den = Gaussian::default().denoiser();
    let ctx = RunContext::new(&Ou, &den, &NoNoise, 5).step(StepSpan {
        from: Ou.coefs(t),
        to: Ou.coefs(s),
        step,
        steps,
    });
    let out = solver.step(&ctx, state)?;
    assert!(
        out.error_estimate.is_none(),
        "a fixed-step solver returned an error estimate"
    );
    Ok((out.state, den.nfe()))
}

/// The history entry of an evaluation on [`Ou`] at `t` that gave `x0_hat`.
pub fn ou_entry(t: f64, x0_hat: Tensor) -> crate::HistoryEntry {
    crate::HistoryEntry::x0(&Ou.coefs(t), x0_hat)
}

/// Starting points at T of the ODE solvers' pathwise checks ([`ode_flow_run`]): the rows of a
/// `[4, 2]` batch, both signs and the neighbourhood of [`Gaussian::default`]'s mean.
pub const FLOW_STARTS: [[f64; 2]; 4] = [[0.0, 0.0], [1.5, -2.0], [-1.0, 0.7], [2.5, 1.0]];

/// What [`ode_flow_run`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct OdeFlowRun {
    /// x at t_ε, row-major.
    pub x: Vec<f64>,
    /// The largest |x − exact flow map| at t_ε.
    pub max_error: f64,
    /// Model evaluations.
    pub nfe: u64,
    /// Noise draw indices taken (0 for an ODE solver).
    pub draws: u64,
    /// Steps that returned an error estimate.
    pub error_estimates: usize,
}

/// The exact PF-ODE flow map of [`Gaussian::default`] under `sde` from T to t_ε
/// ([`Gaussian::flow_map`]) of the rows of `x_t`, row-major.
pub fn exact_flow(sde: &dyn ForwardSde, x_t: &Tensor) -> Result<Vec<f64>> {
    let model = Gaussian::default();
    let (from, to) = (sde.coefs(sde.t_max()), sde.coefs(sde.t_eps()));
    let (model, from, to) = (&model, &from, &to);
    Ok(rows(x_t)?
        .iter()
        .flat_map(|row| {
            row.iter()
                .enumerate()
                .map(move |(j, &x)| model.flow_map(x, j, from, to))
        })
        .collect())
}

/// The largest |a − b| entry by entry (0 when empty).
pub fn max_abs_gap(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// The pipeline of the pathwise checks: `solver` on `sde`'s `grid` of `steps` steps, reading
/// [`Gaussian::default`] as ε ([`EpsParam`]), with `noise`, in f64, in one chunk.
pub fn gaussian_pipeline(
    sde: Arc<dyn ForwardSde>,
    solver: Arc<dyn Solver>,
    grid: crate::GridKind,
    steps: usize,
    noise: Arc<dyn NoiseSource>,
) -> Result<crate::Pipeline> {
    crate::Pipeline::builder()
        .sde(sde)
        .param(Arc::new(EpsParam))
        .model(Arc::new(Gaussian::default()))
        .solver(solver)
        .steps(steps)
        .grid(grid)
        .noise(noise)
        .chunk_rows(None)
        .dtype(DType::F64)
        .build()
}

/// [`gaussian_pipeline`] on [`Ou`]'s λ-uniform grid with [`NoNoise`]: a deterministic solver's
/// plain pipeline.
pub fn ou_pipeline(solver: Arc<dyn Solver>, steps: usize) -> Result<crate::Pipeline> {
    gaussian_pipeline(
        Arc::new(Ou),
        solver,
        crate::GridKind::LogSnr,
        steps,
        Arc::new(NoNoise),
    )
}

/// The pathwise errors of a deterministic `solver` through the pipeline
/// ([`gaussian_pipeline`], with [`NoNoise`]): for each N of `steps`, the largest error at t_ε
/// of the run from the rows of `x_t` at T against [`exact_flow`]. `check` sees each run's N,
/// pipeline and output first, for the solver's own claims (NFE, history).
pub fn pathwise_errors(
    sde: Arc<dyn ForwardSde>,
    solver: Arc<dyn Solver>,
    grid: crate::GridKind,
    x_t: &Tensor,
    steps: &[usize],
    mut check: impl FnMut(usize, &crate::Pipeline, &crate::SampleOutput),
) -> Result<Vec<f64>> {
    let exact = exact_flow(&*sde, x_t)?;
    steps
        .iter()
        .map(|&n| {
            let p = gaussian_pipeline(sde.clone(), solver.clone(), grid, n, Arc::new(NoNoise))?;
            let out = p.run(State::new(x_t.clone(), sde.t_max(), 0))?;
            check(n, &p, &out);
            Ok(max_abs_gap(&flat(&out.state.x)?, &exact))
        })
        .collect()
}

/// `steps` steps of `solver` on [`Ou`]'s uniform grid from T to t_ε, from [`FLOW_STARTS`],
/// reading [`Gaussian::default`] as ε, with noise that would turn every value NaN if drawn:
/// the error at t_ε against the exact PF-ODE flow map ([`Gaussian::flow_map`]), and what the
/// run cost (DESIGN.md "Measuring sample quality honestly" (b)).
pub fn ode_flow_run(solver: &dyn Solver, steps: usize) -> Result<OdeFlowRun> {
    let (sde, model) = (Ou, Gaussian::default());
    let den = model.denoiser();
    let noise = crate::noise::ConstantNoise(f64::NAN);
    let ts = crate::GridKind::Uniform.times(&sde, steps)?;
    let mut state = State::new(Tensor::new(&FLOW_STARTS, &Device::Cpu)?, ts[0], 0);
    let (mut draws, mut error_estimates) = (0, 0);
    for (i, w) in ts.windows(2).enumerate() {
        let ctx = RunContext::new(&sde, &den, &noise, 0).step(StepSpan {
            from: sde.coefs(w[0]),
            to: sde.coefs(w[1]),
            step: i,
            steps,
        });
        let step = solver.step(&ctx, &state)?;
        draws += ctx.draws_taken();
        error_estimates += usize::from(step.error_estimate.is_some());
        state = step.state;
        state.t = w[1];
        state.step = i + 1;
    }
    let x = flat(&state.x)?;
    let exact = exact_flow(&sde, &Tensor::new(&FLOW_STARTS, &Device::Cpu)?)?;
    let max_error = max_abs_gap(&x, &exact);
    Ok(OdeFlowRun {
        x,
        max_error,
        nfe: den.nfe(),
        draws,
        error_estimates,
    })
}

/// The pathwise order of an ODE solver claiming `nfe_per_step` evaluations and no noise:
/// [`ode_flow_run`] at N = 16 … 1,024 uniform steps, the tail order of its errors
/// ([`tail_order`]) and the errors. A run that draws noise, returns an error estimate or
/// costs other than `nfe_per_step` × N is an error.
pub fn ode_flow_order(solver: &dyn Solver, nfe_per_step: u64) -> Result<(f64, Vec<f64>)> {
    let ns: Vec<usize> = (4..=10).map(|k| 1 << k).collect();
    let mut errors = Vec::new();
    for &n in &ns {
        let run = ode_flow_run(solver, n)?;
        if (run.nfe, run.draws, run.error_estimates) != (nfe_per_step * n as u64, 0, 0) {
            return Err(Error::Msg(format!(
                "{n} steps cost {} NFE (claimed {}), drew {} normals and returned {} error estimates (an ODE solver draws none and has no embedded weights)",
                run.nfe,
                nfe_per_step * n as u64,
                run.draws,
                run.error_estimates
            )));
        }
        errors.push(run.max_error);
    }
    let order = tail_order(&ns, &errors).ok_or_else(|| {
        Error::Msg(format!(
            "fewer than three errors above {TAIL_FIT_FLOOR:e} to fit: {errors:?}"
        ))
    })?;
    Ok((order, errors))
}

/// |got − want| ≤ `tol` (1 + |want|) elementwise, naming `what` on failure.
pub fn assert_close(got: &[Vec<f64>], want: &[Vec<f64>], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}: {g} vs {w}");
    }
}

/// Errors at or below this are rounding, not truncation: [`tail_order`] leaves them out.
pub const TAIL_FIT_FLOOR: f64 = 1e-11;

/// The fitted order p of err ≈ C N^{−p}: minus the least-squares slope of ln err against ln N
/// over the last three points above [`TAIL_FIT_FLOOR`] (DESIGN.md "Orders": the tail fit;
/// whole-range fits of correct code miss by 0.3–0.8). `None` with fewer than three such
/// points. A NaN error is not above the floor and is left out; an infinite one is kept, so the
/// fit is not finite and fails any tolerance.
pub fn tail_order(steps: &[usize], errors: &[f64]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = steps
        .iter()
        .zip(errors)
        .filter(|(_, e)| **e > TAIL_FIT_FLOOR)
        .map(|(&n, &e)| ((n as f64).ln(), e.ln()))
        .collect();
    let tail = pts.get(pts.len().checked_sub(3)?..)?;
    let mx = tail.iter().map(|p| p.0).sum::<f64>() / 3.0;
    let my = tail.iter().map(|p| p.1).sum::<f64>() / 3.0;
    let sxy: f64 = tail.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = tail.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    Some(-sxy / sxx)
}

/// How far the rows of a source are from its law: the largest deviation of their mean and
/// covariance from `law`'s, entry by entry, in standard errors, and which entry it is.
/// `values` holds n rows of d values, row-major. The standard error of an entry is estimated
/// from the rows: the sd of x_j, or of the centred product (x_j − μ_j)(x_k − μ_k) with μ the
/// law's mean (so the covariance estimate is unbiased), over √n. A non-finite value, or a
/// deviation where the rows show no spread, counts as infinitely many standard errors.
pub fn moments_deviation(values: &[f64], d: usize, law: &crate::data::Moments) -> (f64, String) {
    let n = (values.len() / d.max(1)) as f64;
    let (mut worst, mut at) = (0.0f64, String::new());
    let mut score = |err: f64, sd: f64, what: String| {
        let z = if !(err.is_finite() && sd.is_finite()) {
            f64::INFINITY
        } else if sd > 0.0 {
            err.abs() / (sd / n.sqrt())
        } else if err.abs() > 1e-12 {
            f64::INFINITY
        } else {
            0.0
        };
        if z > worst || at.is_empty() {
            (worst, at) = (z.max(worst), what);
        }
    };
    let col = |j: usize| values.iter().skip(j).step_by(d).copied();
    for j in 0..d {
        let mean = col(j).sum::<f64>() / n;
        let var = col(j).map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        score(mean - law.mean[j], var.sqrt(), format!("mean[{j}]"));
    }
    for j in 0..d {
        for k in j..d {
            let prods: Vec<f64> = col(j)
                .zip(col(k))
                .map(|(a, b)| (a - law.mean[j]) * (b - law.mean[k]))
                .collect();
            let c = prods.iter().sum::<f64>() / n;
            let var = prods.iter().map(|p| (p - c).powi(2)).sum::<f64>() / (n - 1.0);
            score(
                c - law.covariance[j][k],
                var.sqrt(),
                format!("cov[{j}][{k}]"),
            );
        }
    }
    (worst, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_order_recovers_a_known_order_and_ignores_rounding() {
        let steps = [16, 32, 64, 128, 256];
        // e = 3 N^{-2} exactly (a closed form), then a point lost to rounding.
        let mut errors: Vec<f64> = steps.iter().map(|n| 3.0 / (*n as f64).powi(2)).collect();
        errors[4] = 1e-14;
        let p = tail_order(&steps, &errors).expect("three points above the floor");
        assert!((p - 2.0).abs() < 1e-12, "{p}");
        assert_eq!(tail_order(&[16, 32], &[1.0, 0.25]), None);
        assert!(!tail_order(&[16, 32, 64], &[1.0, 0.5, f64::INFINITY]).is_some_and(f64::is_finite));
    }
}
