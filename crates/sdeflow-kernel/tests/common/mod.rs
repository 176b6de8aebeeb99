//! Test-local implementations of the kernel's traits, shared by the integration tests.
//!
//! Kernel tests must not depend on plugin crates (a dev-dependency on a plugin links a second
//! copy of the kernel with its own, empty registry), so the SDEs, parameterizations, models
//! and solvers used here are small local versions whose formulas are stated beside them, or
//! the shared fixtures of [`sdeflow_kernel::testing`].
#![allow(dead_code)]

use std::{
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Linear, Module};
use sdeflow_kernel::{
    At, Discretization, Equation, ForwardSde, GridKind, Lin, Order, Parameterization, PerRow,
    Result, ScoreModel, Solver, SolverClaims, State, Step, StepContext, TargetLin, TimeCoefs,
    convert,
    noise::{NoiseRequest, NoiseSource},
    ops::{lin2, lin3},
    testing::Ou,
};
// Each test binary uses only some of these re-exports, as with the items below (`dead_code`).
#[allow(unused_imports)]
pub use sdeflow_kernel::testing::{EpsParam, flat, normals};

/// The coefficients of [`Ou`] (VP with a constant β = 2: α = e^{−t}, σ = √(1 − e^{−2t}),
/// f = −1, g² = 2) on a chosen [t_ε, T], with the trait's default λ = log(α/σ) and, unless
/// [`closed`](Self::closed), the trait's default (bisection) inverse of λ. The closed forms
/// are λ = −½ log(e^{2t} − 1) and t = ½ log(1 + e^{−2λ}).
#[derive(Debug, Clone, Copy)]
pub struct ExpSde {
    /// T.
    pub t_max: f64,
    /// t_ε.
    pub t_eps: f64,
    /// Override `t_of_log_snr` with the closed form (otherwise the trait's bisection runs).
    pub closed_inverse: bool,
}

impl ExpSde {
    /// T = 1, t_ε = 1e-3, the trait's default (bisection) inverse of λ.
    pub fn new() -> Self {
        Self {
            t_max: 1.0,
            t_eps: 1e-3,
            closed_inverse: false,
        }
    }

    /// The same SDE with the closed-form inverse of λ.
    pub fn closed() -> Self {
        Self {
            closed_inverse: true,
            ..Self::new()
        }
    }

    /// The closed-form λ(t) = −½ log(e^{2t} − 1) ([`Ou`]'s).
    pub fn log_snr_exact(t: f64) -> f64 {
        Ou.log_snr(t)
    }

    /// The closed-form t(λ) = ½ log(1 + e^{−2λ}) ([`Ou`]'s).
    pub fn t_of_log_snr_exact(lambda: f64) -> f64 {
        Ou.t_of_log_snr(lambda)
    }
}

impl ForwardSde for ExpSde {
    fn t_max(&self) -> f64 {
        self.t_max
    }
    fn t_eps(&self) -> f64 {
        self.t_eps
    }
    fn alpha(&self, t: f64) -> f64 {
        Ou.alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        Ou.sigma(t)
    }
    fn drift_coef(&self, t: f64) -> f64 {
        Ou.drift_coef(t)
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        Ou.diffusion_sq(t)
    }
    fn prior_std(&self) -> f64 {
        Ou.prior_std()
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        if self.closed_inverse {
            Self::t_of_log_snr_exact(lambda)
        } else {
            // The trait's default body, which `ForwardSde` does not expose separately.
            default_t_of_log_snr(self, lambda)
        }
    }
}

/// EDM's SDE (Karras et al. 2022): α = 1, σ = t, f = 0, g² = dσ²/dt = 2t, prior N(0, T² I),
/// T = 80, t_ε = 0.002. λ = −log t, so t(λ) = e^{−λ}. Uses the trait's default inverse.
#[derive(Debug, Clone, Copy)]
pub struct EdmSde;

impl ForwardSde for EdmSde {
    fn t_max(&self) -> f64 {
        80.0
    }
    fn t_eps(&self) -> f64 {
        0.002
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
        80.0
    }
    fn default_grid(&self) -> GridKind {
        GridKind::Karras { rho: 7.0 }
    }
}

/// An SDE that keeps every provided method of the trait, for calling the default bisection
/// from [`ExpSde::t_of_log_snr`].
#[derive(Debug)]
struct DefaultInverse<'a>(&'a ExpSde);

impl ForwardSde for DefaultInverse<'_> {
    fn t_max(&self) -> f64 {
        self.0.t_max
    }
    fn t_eps(&self) -> f64 {
        self.0.t_eps
    }
    fn alpha(&self, t: f64) -> f64 {
        self.0.alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        self.0.sigma(t)
    }
    fn drift_coef(&self, t: f64) -> f64 {
        self.0.drift_coef(t)
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        self.0.diffusion_sq(t)
    }
    fn prior_std(&self) -> f64 {
        self.0.prior_std()
    }
}

fn default_t_of_log_snr(sde: &ExpSde, lambda: f64) -> f64 {
    DefaultInverse(sde).t_of_log_snr(lambda)
}

/// v-prediction (Salimans & Ho 2022), MATH.md §3 last row, stated only through its ε̂ pair
/// and its target so that the kernel's default x̂₀ pair and loss scale are what a test
/// exercises: v = α ε − σ x₀, ε̂ = (σ x + α v)/(α² + σ²). ‖v̂ − v‖ = ((α² + σ²)/α) ‖ε̂ − ε‖
/// (MATH.md §4).
#[derive(Debug, Clone, Copy)]
pub struct VParam;

impl Parameterization for VParam {
    fn eps(&self, c: &TimeCoefs) -> Lin {
        let n = c.alpha * c.alpha + c.sigma * c.sigma;
        Lin {
            out: c.alpha / n,
            x: c.sigma / n,
        }
    }
    fn target(&self, c: &TimeCoefs) -> TargetLin {
        TargetLin {
            x0: -c.sigma,
            eps: c.alpha,
        }
    }
}

/// The exact ε̂ of data N(m, s² I) under any linear SDE: p_t = N(α m, (α² s² + σ²) I), so
/// ŝ = −(x − α m)/(α² s² + σ²) and ε̂ = −σ ŝ (MATH.md §7 with one component). Row-wise.
#[derive(Debug, Clone)]
pub struct GaussianEps {
    /// The data mean m (one entry per coordinate).
    pub mean: Vec<f64>,
    /// The data standard deviation s.
    pub std: f64,
}

impl ScoreModel for GaussianEps {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.mean.len()]
    }
    fn forward(&self, x: &Tensor, at: &At, _cond: Option<&Tensor>) -> Result<Tensor> {
        let c = at.call("GaussianEps")?;
        let var = c.alpha * c.alpha * self.std * self.std + c.sigma * c.sigma;
        let m = Tensor::new(self.mean.as_slice(), x.device())?
            .to_dtype(x.dtype())?
            .affine(c.alpha, 0.0)?;
        let score = x.broadcast_sub(&m)?.affine(-1.0 / var, 0.0)?;
        convert::eps_from_score(&score, &at.time)
    }
    fn rows_independent(&self) -> bool {
        true
    }
}

/// A small MLP on `candle_nn::Linear` with fixed weights: ε̂ = W₂ tanh(W₁ [x, t] + b₁) + b₂.
/// Built on matmul, so candle may give a row different bits at different batch sizes; it
/// declares `rows_independent() == false` and relies on the pipeline's chunking.
#[derive(Debug, Clone)]
pub struct LinearEps {
    l1: Linear,
    l2: Linear,
    dim: usize,
}

impl LinearEps {
    /// A `dim` → `hidden` → `dim` network with deterministic weights of size ~1/√fan-in.
    pub fn new(dim: usize, hidden: usize, dtype: DType) -> Result<Self> {
        let dev = Device::Cpu;
        let w = |rows: usize, cols: usize, phase: f64| -> Result<Tensor> {
            let scale = 1.5 / (cols as f64).sqrt();
            let v: Vec<f64> = (0..rows * cols)
                .map(|k| scale * (1.37 * k as f64 + phase).sin())
                .collect();
            Ok(Tensor::from_vec(v, (rows, cols), &dev)?.to_dtype(dtype)?)
        };
        let b = |n: usize, phase: f64| -> Result<Tensor> {
            let v: Vec<f64> = (0..n)
                .map(|k| 0.1 * (0.71 * k as f64 + phase).cos())
                .collect();
            Ok(Tensor::from_vec(v, n, &dev)?.to_dtype(dtype)?)
        };
        Ok(Self {
            l1: Linear::new(w(hidden, dim + 1, 0.3)?, Some(b(hidden, 0.2)?)),
            l2: Linear::new(w(dim, hidden, 1.1)?, Some(b(dim, 0.9)?)),
            dim,
        })
    }

    /// The same weights as autograd variables (a trainable model's): its outputs are tracked.
    pub fn trainable(dim: usize, hidden: usize, dtype: DType) -> Result<(Self, Vec<Var>)> {
        let fixed = Self::new(dim, hidden, dtype)?;
        let mut vars = Vec::new();
        let mut var = |t: &Tensor| -> Result<Tensor> {
            let v = Var::from_tensor(t)?;
            let t = v.as_tensor().clone();
            vars.push(v);
            Ok(t)
        };
        let mut layer = |l: &Linear| -> Result<Linear> {
            let bias = l.bias().map(&mut var).transpose()?;
            Ok(Linear::new(var(l.weight())?, bias))
        };
        let (l1, l2) = (layer(&fixed.l1)?, layer(&fixed.l2)?);
        Ok((Self { l1, l2, dim }, vars))
    }
}

impl ScoreModel for LinearEps {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.dim]
    }
    fn forward(&self, x: &Tensor, at: &At, _cond: Option<&Tensor>) -> Result<Tensor> {
        let n = x.dim(0)?;
        let t = match &at.time {
            PerRow::Call(c) => Tensor::full(c.t, (n, 1), x.device())?.to_dtype(x.dtype())?,
            time => time
                .map(|c| c.t)
                .column(2, x.dtype(), x.device())?
                .expect("per-row times"),
        };
        let h = self.l1.forward(&Tensor::cat(&[x, &t], 1)?)?.tanh()?;
        Ok(self.l2.forward(&h)?)
    }
}

/// A model whose output turns non-finite once t falls below `below_t`.
#[derive(Debug, Clone, Copy)]
pub struct BreaksBelow {
    /// The threshold time.
    pub below_t: f64,
    /// The value returned there (NaN or ±∞).
    pub value: f64,
}

impl ScoreModel for BreaksBelow {
    fn sample_shape(&self) -> Vec<usize> {
        vec![2]
    }
    fn forward(&self, x: &Tensor, at: &At, _cond: Option<&Tensor>) -> Result<Tensor> {
        if at.call("BreaksBelow")?.t < self.below_t {
            Ok(Tensor::full(self.value, x.shape(), x.device())?.to_dtype(x.dtype())?)
        } else {
            Ok(x.zeros_like()?)
        }
    }
    fn rows_independent(&self) -> bool {
        true
    }
}

/// A model that records the row count of every call and returns x + cond (or x).
#[derive(Debug, Default)]
pub struct RecordingModel {
    /// Rows seen per call.
    pub calls: Mutex<Vec<usize>>,
    /// What `rows_independent` answers.
    pub independent: bool,
    /// The sample width.
    pub dim: usize,
}

impl ScoreModel for RecordingModel {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.dim]
    }
    fn forward(&self, x: &Tensor, _at: &At, cond: Option<&Tensor>) -> Result<Tensor> {
        self.calls.lock().expect("lock").push(x.dim(0)?);
        match cond {
            Some(cond) => Ok((x + cond)?),
            None => Ok(x.clone()),
        }
    }
    fn rows_independent(&self) -> bool {
        self.independent
    }
}

fn claims(order: Order, nfe: usize, stochastic: bool, equation: Equation) -> SolverClaims {
    SolverClaims {
        order,
        nfe_per_step: nfe,
        stochastic,
        affine: true,
        equation,
        natural_grid: GridKind::Uniform,
    }
}

/// Euler on the PF-ODE: x_s = x_t − h (f x_t − ½ g² ŝ(x_t, t)) (MATH.md §2). 1 NFE, no noise.
/// Its default schedule is 25 quadratic steps (an arbitrary, recognisable choice).
#[derive(Debug, Clone, Copy)]
pub struct OdeEuler;

impl Solver for OdeEuler {
    fn claims(&self) -> SolverClaims {
        claims(Order::Ode(1.0), 1, false, Equation::ProbabilityFlowOde)
    }
    fn default_discretization(&self, _sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: 25,
            grid: GridKind::Quadratic,
        }
    }
    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let c = &ctx.from;
        let h = ctx.h();
        let score = ctx.eval(&state.x, c)?.score()?;
        let x = lin2(1.0 - c.f * h, &state.x, 0.5 * c.g2 * h, &score)?;
        Ok(Step::to(state.with_x(x)))
    }
}

/// Heun on the PF-ODE (EDM Alg. 1, MATH.md §5): 2 NFE per step.
#[derive(Debug, Clone, Copy)]
pub struct OdeHeun;

impl Solver for OdeHeun {
    fn claims(&self) -> SolverClaims {
        claims(Order::Ode(2.0), 2, false, Equation::ProbabilityFlowOde)
    }
    fn default_discretization(&self, _sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: 10,
            grid: GridKind::Uniform,
        }
    }
    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let drift = |x: &Tensor, c: &TimeCoefs| -> Result<Tensor> {
            let s = ctx.eval(x, c)?.score()?;
            lin2(c.f, x, -0.5 * c.g2, &s)
        };
        let h = ctx.h();
        let d = drift(&state.x, &ctx.from)?;
        let x_pred = lin2(1.0, &state.x, -h, &d)?;
        let d2 = drift(&x_pred, &ctx.to)?;
        let x = lin3(1.0, &state.x, -0.5 * h, &d, -0.5 * h, &d2)?;
        Ok(Step::to(state.with_x(x)))
    }
}

/// Euler–Maruyama on the reverse SDE (MATH.md §5) drawing `draws` normals per step and using
/// z = (z₁ + … + z_k)/√k, still a standard normal; it also keeps the last two (λ, x̂₀) in the
/// history, like a multistep method, and counts its steps in the extra tensor `steps`.
#[derive(Debug, Clone, Copy)]
pub struct NoisyEuler {
    /// Normal draws per step.
    pub draws: usize,
}

impl Solver for NoisyEuler {
    fn claims(&self) -> SolverClaims {
        claims(
            Order::Sde {
                weak: 1.0,
                strong: 1.0,
            },
            1,
            true,
            Equation::ReverseSde,
        )
    }
    fn default_discretization(&self, _sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: 10,
            grid: GridKind::Uniform,
        }
    }
    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let c = &ctx.from;
        let h = ctx.h();
        let pred = ctx.eval(&state.x, c)?;
        let score = pred.score()?;
        let mut z = ctx.standard_normal(state)?;
        for _ in 1..self.draws {
            z = (z + ctx.standard_normal(state)?)?;
        }
        let z = z.affine(1.0 / (self.draws as f64).sqrt(), 0.0)?;
        let x = lin3(
            1.0 - c.f * h,
            &state.x,
            c.g2 * h,
            &score,
            (c.g2 * h).sqrt(),
            &z,
        )?;
        let mut next = state.with_x(x);
        next.history
            .push(sdeflow_kernel::HistoryEntry::x0(c, pred.x0()?));
        if next.history.len() > 2 {
            next.history.remove(0);
        }
        let count = match state.extras.get("steps") {
            Some(s) => s.affine(1.0, 1.0)?,
            None => Tensor::new(&[1f64], state.x.device())?,
        };
        next.extras.insert("steps".into(), count);
        Ok(Step::to(next))
    }
}

/// A solver that accumulates the noise it is given as a Brownian increment: the extra tensor
/// `w` gathers Σ z √h over the steps, x is left alone. With [`BrownianNoise`] this is
/// W(T) − W(t_ε) whatever the grid.
///
/// [`BrownianNoise`]: sdeflow_kernel::noise::BrownianNoise
#[derive(Debug, Clone, Copy)]
pub struct AccumulateNoise;

impl Solver for AccumulateNoise {
    fn claims(&self) -> SolverClaims {
        claims(Order::Plateau { snr: 0.16 }, 0, true, Equation::ReverseSde)
    }
    fn default_discretization(&self, _sde: &dyn ForwardSde) -> Discretization {
        Discretization {
            steps: 4,
            grid: GridKind::Uniform,
        }
    }
    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step> {
        let z = ctx
            .standard_normal(state)?
            .to_dtype(DType::F64)?
            .affine(ctx.h().sqrt(), 0.0)?;
        let w = match state.extras.get("w") {
            Some(w) => (w + z)?,
            None => z,
        };
        let mut next = state.clone();
        next.extras.insert("w".into(), w);
        Ok(Step::to(next))
    }
}

/// A noise source that records every request and returns zeros.
#[derive(Debug, Default)]
pub struct RecordingNoise {
    /// The requests, in order.
    pub requests: Mutex<Vec<NoiseRequest>>,
}

impl NoiseSource for RecordingNoise {
    fn standard_normal(&self, req: &NoiseRequest, dtype: DType, device: &Device) -> Result<Tensor> {
        self.requests.lock().expect("lock").push(req.clone());
        Ok(Tensor::zeros((req.rows, req.cols), dtype, device)?)
    }
}

/// ‖a − b‖ / ‖b‖ over all entries.
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (flat(a)?, flat(b)?);
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    Ok((num / den).sqrt())
}

/// The bit patterns of an f32 tensor, row by row.
pub fn bits_f32(x: &Tensor) -> Result<Vec<Vec<u32>>> {
    Ok(x.to_vec2::<f32>()?
        .into_iter()
        .map(|r| r.into_iter().map(f32::to_bits).collect())
        .collect())
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system's temp dir, unique to this process and call; removed
/// when the guard drops.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `sdeflow-kernel-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Result<Self> {
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "sdeflow-kernel-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|source| sdeflow_kernel::Error::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self(dir))
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sample mean and unbiased variance.
pub fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, var)
}

/// Sample correlation of two equally long series.
pub fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let (ma, va) = mean_var(a);
    let (mb, vb) = mean_var(b);
    let n = a.len() as f64;
    let cov = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (n - 1.0);
    cov / (va * vb).sqrt()
}
