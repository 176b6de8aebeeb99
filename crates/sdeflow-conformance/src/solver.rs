//! Solver contracts: the claimed order by exact propagation of the weak error on a single
//! Gaussian, SW2 on the mixtures from exact p_T samples, NFE counted against claimed,
//! finiteness at every step count, and bit-identical samples across batch sizes and reruns.

use std::{collections::HashMap, sync::Arc};

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::{
    Denoiser, ForwardSde, GridKind, ModelContext, Order, Parameterization, Pipeline, Registry,
    Result, RunContext, ScoreModel, Solver, State, StepSpan, TimeCoefs, bail,
    noise::{BrownianNoise, ConstantNoise, NoiseRequest, NoiseSource},
};

use crate::{
    Mode, Target,
    mixtures::{MixtureSpec, SINGLE_STD, mix8, ring, single_gaussian},
    report::{Report, num},
    sw2::{Floor, SAMPLES, SlicedW2, reference_and_floor},
};

/// Step counts of the order fits: 2^4 … 2^12.
pub const ORDER_STEPS: [usize; 9] = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
/// "Finite at every step count" (DESIGN.md "Decisions").
pub const FINITE_STEPS: [usize; 8] = [1, 2, 3, 5, 10, 100, 1000, 2000];
/// Batch sizes whose samples must agree bit for bit.
pub const BATCHES: [usize; 3] = [1, 7, 1000];
const RUN_SEED: u64 = 42;
const START_SEED: u64 = 3_000;

/// What every solver check needs: the registry (for the oracle) and the parameterization the
/// oracle reports in.
pub struct Fixture<'a> {
    /// The registry.
    pub registry: &'a Registry,
    /// The parameterization runs read the model in.
    pub param: Arc<dyn Parameterization>,
    /// SW2 references and floors, by (mixture, SDE).
    floors: HashMap<(String, String), (SlicedW2, Floor)>,
    /// Paired-error references, by (mixture, SDE).
    references: HashMap<(String, String), Vec<f64>>,
    /// Whether the quick pass has run every parameterization once already.
    param_matrix_done: bool,
    /// Where the solver's runs happen (references and floors stay on the host in f64).
    pub target: Target,
}

impl<'a> Fixture<'a> {
    /// A fixture reading the oracle through `param`, running solvers on `target`.
    pub fn new(registry: &'a Registry, param: Arc<dyn Parameterization>, target: Target) -> Self {
        Self {
            registry,
            param,
            floors: HashMap::new(),
            references: HashMap::new(),
            param_matrix_done: false,
            target,
        }
    }

    /// The oracle of `spec` on the run's target.
    fn oracle(&self, spec: &MixtureSpec) -> Result<Arc<dyn ScoreModel>> {
        self.oracle_on(spec, &self.target, self.param.clone())
    }

    fn oracle_on(
        &self,
        spec: &MixtureSpec,
        on: &Target,
        param: Arc<dyn Parameterization>,
    ) -> Result<Arc<dyn ScoreModel>> {
        let ctx = ModelContext {
            param,
            device: on.device.clone(),
            dtype: on.dtype,
        };
        self.registry
            .model("gmm_oracle", &spec.oracle_params(), &ctx)
    }

    /// The RK4 reference endpoints of the paired comparison on `spec` under `sde`, cached.
    fn paired_reference(
        &mut self,
        spec: &MixtureSpec,
        sde_name: &str,
        sde: &Arc<dyn ForwardSde>,
    ) -> Result<Vec<f64>> {
        let key = (spec.name.to_string(), sde_name.to_string());
        if let Some(r) = self.references.get(&key) {
            return Ok(r.clone());
        }
        let rk4 = self.registry.solver("rk4", "()")?;
        let pipeline = Pipeline::builder()
            .sde(sde.clone())
            .param(self.param.clone())
            .model(self.oracle_on(spec, &Target::default(), self.param.clone())?)
            .solver(rk4)
            .steps(REFERENCE_STEPS)
            .grid(GridKind::LogSnr)
            .dtype(DType::F64)
            .build()?;
        let x = pipeline
            .run(State::new(
                exact_start(spec, &**sde, PAIRED_SAMPLES)?,
                sde.t_max(),
                0,
            ))?
            .state
            .x;
        let r = x.flatten_all()?.to_vec1::<f64>()?;
        self.references.insert(key, r.clone());
        Ok(r)
    }

    fn floor(
        &mut self,
        spec: &MixtureSpec,
        sde_name: &str,
        sde: &dyn ForwardSde,
    ) -> Result<&(SlicedW2, Floor)> {
        let key = (spec.name.to_string(), sde_name.to_string());
        if !self.floors.contains_key(&key) {
            let c = sde.coefs(sde.t_eps());
            let target = spec.mixture()?.marginal(c.alpha, c.sigma)?;
            self.floors
                .insert(key.clone(), reference_and_floor(&target, SAMPLES)?);
        }
        Ok(&self.floors[&key])
    }
}

fn claimed_order(order: Order) -> Option<f64> {
    match order {
        Order::Ode(p) => Some(p),
        Order::Sde { weak, .. } => Some(weak),
        Order::Plateau { .. } => None,
    }
}

/// The single Gaussian's marginal variance per coordinate at `c`: α² s² + σ².
fn single_var(c: &TimeCoefs) -> f64 {
    c.alpha * c.alpha * SINGLE_STD * SINGLE_STD + c.sigma * c.sigma
}

fn rows_f64(x: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(Target::host(x)?.to_vec2::<f64>()?)
}

/// A tensor's values on the host in f64, flattened.
fn host_vec(x: &Tensor) -> Result<Vec<f64>> {
    Ok(Target::host(&x.flatten_all()?)?.to_vec1::<f64>()?)
}

/// Noise that is 1 on the `k`-th call of a step and 0 on the others: reads the coefficient of
/// each draw of a step separately.
#[derive(Debug)]
struct UnitDraw(u64);

impl NoiseSource for UnitDraw {
    fn standard_normal(&self, req: &NoiseRequest, dtype: DType, device: &Device) -> Result<Tensor> {
        let v = if req.index_in_step == self.0 {
            1.0
        } else {
            0.0
        };
        Ok(Tensor::full(v, (req.rows, req.cols), device)?.to_dtype(dtype)?)
    }
}

/// The law after `steps` steps on the single Gaussian, propagated exactly: each step of the
/// plugin is x_s = A x_t + b + Σ_k C_k z_k, read off with x = 0, 1 and all noise 0, then with
/// the k-th draw 1 and the others 0; mean and variance then propagate without sampling.
/// Returns (mean, variance) per coordinate and the exact marginal's coefficients at t_ε.
fn propagate_exactly(
    sde: &dyn ForwardSde,
    solver: &dyn Solver,
    model: Arc<dyn ScoreModel>,
    param: Arc<dyn Parameterization>,
    grid: GridKind,
    steps: usize,
    target: &Target,
) -> Result<(Vec<f64>, Vec<f64>, TimeCoefs)> {
    let spec = single_gaussian();
    let m = &spec.means[0];
    let d = m.len();
    let s2 = SINGLE_STD * SINGLE_STD;
    let times = grid.times(sde, steps)?;
    let denoiser = Denoiser::new(model, param, None, None);
    let zero = ConstantNoise(0.0);
    let probe = target.put(&Tensor::from_vec(
        [vec![0.0; d], vec![1.0; d]].concat(),
        (2, d),
        &Device::Cpu,
    )?)?;
    let origin = Tensor::zeros((1, d), target.dtype, &target.device)?;
    let c0 = sde.coefs(times[0]);
    let mut mean: Vec<f64> = m.iter().map(|v| c0.alpha * v).collect();
    let mut var = vec![c0.alpha * c0.alpha * s2 + c0.sigma * c0.sigma; d];
    for i in 0..steps {
        let (from, to) = (sde.coefs(times[i]), sde.coefs(times[i + 1]));
        let ctx = RunContext::new(sde, &denoiser, &zero, RUN_SEED).step(StepSpan {
            from,
            to,
            step: i,
            steps,
        });
        let affine = rows_f64(
            &solver
                .step(&ctx, &State::new(probe.clone(), from.t, 0))?
                .state
                .x,
        )?;
        let draws = ctx.draw_calls();
        if ctx.draws_taken() != draws * d as u64 {
            bail!(
                "exact propagation reads one draw per coordinate per call; this step took {} draw indices in {draws} calls for {d} coordinates",
                ctx.draws_taken()
            );
        }
        let mut noise_var = vec![0.0; d];
        for k in 0..draws {
            let unit = UnitDraw(k);
            let ctx_k = RunContext::new(sde, &denoiser, &unit, RUN_SEED).step(StepSpan {
                from,
                to,
                step: i,
                steps,
            });
            let noisy = rows_f64(
                &solver
                    .step(&ctx_k, &State::new(origin.clone(), from.t, 0))?
                    .state
                    .x,
            )?;
            for j in 0..d {
                noise_var[j] += (noisy[0][j] - affine[0][j]).powi(2);
            }
        }
        for j in 0..d {
            let b = affine[0][j];
            let a = affine[1][j] - b;
            mean[j] = a * mean[j] + b;
            var[j] = a * a * var[j] + noise_var[j];
        }
    }
    Ok((mean, var, sde.coefs(times[steps])))
}

/// The weak error at `steps` on the single Gaussian, propagated exactly
/// ([`propagate_exactly`]): the closed-form W2 between the final Gaussian and the exact
/// marginal at t_ε. `model` lives on `target`, where the steps run.
pub fn exact_weak_error(
    sde: &dyn ForwardSde,
    solver: &dyn Solver,
    model: Arc<dyn ScoreModel>,
    param: Arc<dyn Parameterization>,
    grid: GridKind,
    steps: usize,
    target: &Target,
) -> Result<f64> {
    let (mean, var, c) = propagate_exactly(sde, solver, model, param, grid, steps, target)?;
    let m = &single_gaussian().means[0];
    let exact_var = single_var(&c);
    let w2sq: f64 = (0..m.len())
        .map(|j| (mean[j] - c.alpha * m[j]).powi(2) + (var[j].sqrt() - exact_var.sqrt()).powi(2))
        .sum();
    Ok(w2sq.sqrt())
}

/// The W2 distance, per coordinate, between N(0, C) and the Langevin plateau
/// N(0, C/(1 − r² σ²/C)) of the batch-free step ε = 2 (r σ)² ([`Order::Plateau`]).
pub fn plateau_bias(c: f64, snr: f64, sigma: f64) -> f64 {
    let inflation = 1.0 / (1.0 - snr * snr * sigma * sigma / c);
    (c * inflation).sqrt() - c.sqrt()
}

/// Runs every solver contract for `solver` (named `name`) on each SDE.
pub fn check(
    report: &mut Report,
    fixture: &mut Fixture<'_>,
    mode: Mode,
    name: &str,
    solver: Arc<dyn Solver>,
    sdes: &[(&str, Arc<dyn ForwardSde>)],
    params: &[(&str, Arc<dyn Parameterization>)],
) {
    let plugin = format!("solver/{name}");
    let claims = solver.claims();
    for (i, (sde_name, sde)) in sdes.iter().enumerate() {
        if claims.stochastic {
            if claims.affine {
                match claims.order {
                    Order::Plateau { snr } => {
                        plateau(report, fixture, &plugin, &*solver, sde_name, &**sde, snr);
                    }
                    _ => weak_order(report, fixture, &plugin, &*solver, sde_name, &**sde),
                }
            }
            // As for ODE orders, strong orders are claimed on smooth SDEs only: across
            // vp_discrete's 1,000 knots Euler–Maruyama's pathwise error flattens once steps are
            // finer than the knots (N = 512, 1024, 2048: 2.0e-3, 1.2e-3, 9.3e-4; tail 0.55),
            // while ddpm and reverse_diffusion, which step through α_{t|s}, read 0.99 and 0.92.
            let measured = (mode == Mode::Full || i == 0) && sde.knots().is_empty();
            if let (Order::Sde { strong, .. }, true) = (claims.order, measured) {
                strong_order(report, fixture, &plugin, &solver, sde_name, sde, strong);
            }
        } else {
            // A schedule with knots has a drift that jumps: no Runge–Kutta method keeps an order
            // above 1 across them, so orders are claimed on smooth SDEs only.
            if sde.knots().is_empty() {
                flow_order(report, fixture, &plugin, &solver, sde_name, sde);
            }
            let mixtures = if mode == Mode::Full || i == 0 {
                vec![ring(), mix8()]
            } else {
                vec![]
            };
            for spec in mixtures
                .into_iter()
                .filter(|m| mode == Mode::Full || m.name == "ring")
            {
                if let Err(e) =
                    paired_error(report, fixture, &plugin, &solver, sde_name, sde, &spec)
                {
                    report.error(
                        &plugin,
                        format!("paired error on {} ({sde_name}) at default", spec.name),
                        e,
                    );
                }
            }
        }
        // The matrix: every SDE × every parameterization on `ring`. The quick pass keeps the
        // run parameterization on every SDE, and every parameterization on the first SDE with the
        // first solver it checks (conversions do not depend on the solver).
        let run_param = ("", fixture.param.clone());
        let matrix: Vec<(&str, Arc<dyn Parameterization>)> = match mode {
            Mode::Full => params.to_vec(),
            Mode::Quick if i == 0 && !fixture.param_matrix_done => {
                fixture.param_matrix_done = true;
                params.to_vec()
            }
            Mode::Quick => vec![
                params
                    .iter()
                    .find(|(_, p)| Arc::ptr_eq(p, &fixture.param))
                    .cloned()
                    .unwrap_or(run_param),
            ],
        };
        for (param_name, param) in &matrix {
            let run = sw2_at_default(
                report,
                fixture,
                &plugin,
                &solver,
                sde_name,
                sde,
                &ring(),
                param_name,
                param.clone(),
            );
            if let Err(e) = run {
                report.error(
                    &plugin,
                    format!("SW2 on ring ({sde_name}, {param_name}) at default"),
                    e,
                );
            }
        }
        if mode == Mode::Full {
            let param = fixture.param.clone();
            if let Err(e) = sw2_at_default(
                report,
                fixture,
                &plugin,
                &solver,
                sde_name,
                sde,
                &mix8(),
                "",
                param,
            ) {
                report.error(&plugin, format!("SW2 on mix8 ({sde_name}) at default"), e);
            }
        }
        finite_everywhere(report, fixture, &plugin, &solver, sde_name, sde);
        if let Err(e) = bit_identical(report, fixture, &plugin, &solver, sde_name, sde) {
            report.error(
                &plugin,
                format!("bit-identical across batches ({sde_name})"),
                e,
            );
        }
    }
}

/// Starting points of the pathwise checks, in units of the marginal's std at T around its mean.
const FLOW_STARTS: [f64; 5] = [-2.0, -1.0, 0.0, 1.0, 2.5];

/// The pathwise error at t_ε of a deterministic solver against the closed-form PF-ODE flow of
/// the single Gaussian N(m, s² I) (MATH.md §7): x_s = α_s m + √(v_s/v_t)(x_t − α_t m),
/// v = α² s² + σ²; the largest coordinate error over five starts.
pub fn exact_flow_error(
    sde: &Arc<dyn ForwardSde>,
    solver: &Arc<dyn Solver>,
    model: Arc<dyn ScoreModel>,
    param: Arc<dyn Parameterization>,
    grid: GridKind,
    steps: usize,
    target: &Target,
) -> Result<f64> {
    let spec = single_gaussian();
    let m = &spec.means[0];
    let d = m.len();
    let s2 = SINGLE_STD * SINGLE_STD;
    let (c0, c1) = (sde.coefs(sde.t_max()), sde.coefs(sde.t_eps()));
    let (v0, v1) = (
        c0.alpha * c0.alpha * s2 + c0.sigma * c0.sigma,
        c1.alpha * c1.alpha * s2 + c1.sigma * c1.sigma,
    );
    let starts: Vec<f64> = FLOW_STARTS
        .iter()
        .flat_map(|k| m.iter().map(move |mj| c0.alpha * mj + k * v0.sqrt()))
        .collect();
    let x = target.put(&Tensor::from_vec(
        starts.clone(),
        (FLOW_STARTS.len(), d),
        &Device::Cpu,
    )?)?;
    let pipeline = Pipeline::builder()
        .sde(sde.clone())
        .param(param)
        .model(model)
        .solver(solver.clone())
        .steps(steps)
        .grid(grid)
        .chunk_rows(None)
        .device(target.device.clone())
        .dtype(target.dtype)
        .seed(RUN_SEED)
        .build()?;
    let out = host_vec(&pipeline.run(State::new(x, sde.t_max(), 0))?.state.x)?;
    let ratio = (v1 / v0).sqrt();
    Ok(out
        .iter()
        .zip(&starts)
        .enumerate()
        .map(|(k, (got, x0))| {
            let mj = m[k % d];
            (got - (c1.alpha * mj + ratio * (x0 - c0.alpha * mj))).abs()
        })
        .fold(0.0, f64::max))
}

fn flow_order(
    report: &mut Report,
    fixture: &Fixture<'_>,
    plugin: &str,
    solver: &Arc<dyn Solver>,
    sde_name: &str,
    sde: &Arc<dyn ForwardSde>,
) {
    let claims = solver.claims();
    let Some(claim) = claimed_order(claims.order) else {
        return;
    };
    let grid = claims.natural_grid;
    let check = format!(
        "order on {sde_name}, {grid} grid (pathwise vs the exact PF-ODE flow of a Gaussian)"
    );
    let run = |on: &Target| -> Result<Vec<f64>> {
        let model = fixture.oracle_on(&single_gaussian(), on, fixture.param.clone())?;
        ORDER_STEPS
            .iter()
            .map(|&n| {
                let param = fixture.param.clone();
                exact_flow_error(sde, solver, model.clone(), param, grid, n, on)
            })
            .collect()
    };
    let fit = OrderFit {
        steps: &ORDER_STEPS,
        claim,
        tolerance: 0.25,
        tolerance_text: "± 0.25 (tail fit, N ≤ 4096)",
        what: "the pathwise error",
    };
    let scale = single_var(&sde.coefs(sde.t_max())).sqrt();
    order_rows(report, fixture, plugin, check, &fit, scale, run);
}

/// An SDE stopped early: `inner` with t_ε replaced, so that grids end at `t_eps`.
#[derive(Debug)]
struct StoppedAt<'a> {
    inner: &'a dyn ForwardSde,
    t_eps: f64,
}

impl ForwardSde for StoppedAt<'_> {
    fn t_max(&self) -> f64 {
        self.inner.t_max()
    }
    fn t_eps(&self) -> f64 {
        self.t_eps
    }
    fn alpha(&self, t: f64) -> f64 {
        self.inner.alpha(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        self.inner.sigma(t)
    }
    fn drift_coef(&self, t: f64) -> f64 {
        self.inner.drift_coef(t)
    }
    fn diffusion_sq(&self, t: f64) -> f64 {
        self.inner.diffusion_sq(t)
    }
    fn prior_std(&self) -> f64 {
        self.inner.prior_std()
    }
    fn knots(&self) -> Vec<f64> {
        self.inner.knots()
    }
    fn default_grid(&self) -> GridKind {
        self.inner.default_grid()
    }
    fn log_snr(&self, t: f64) -> f64 {
        self.inner.log_snr(t)
    }
    fn t_of_log_snr(&self, lambda: f64) -> f64 {
        self.inner.t_of_log_snr(lambda)
    }
}

/// The plateau of a predictor–corrector on the single Gaussian N(m, s² I). Near t_ε the
/// corrector's relaxation per step, 2 r² σ²/v, vanishes, so the plateau is checked where it is
/// resolved: the run stops at t★ with σ̃ = s (σ² = v/2), where the closed form gives a W2 of
/// √d (√(v/(1 − r²/2)) − √v). The exactly propagated weak error must approach it: within 10%
/// at N = 4096, and closer at 4096 than at 256.
fn plateau(
    report: &mut Report,
    fixture: &Fixture<'_>,
    plugin: &str,
    solver: &dyn Solver,
    sde_name: &str,
    sde: &dyn ForwardSde,
    snr: f64,
) {
    let grid = solver.claims().natural_grid;
    let t_star = sde.t_of_log_snr(-SINGLE_STD.ln());
    let check = format!(
        "plateau on {sde_name}, {grid} grid, stopped at t★ = {} where σ² = v/2 (single Gaussian, exact propagation)",
        num(t_star)
    );
    let stopped = StoppedAt {
        inner: sde,
        t_eps: t_star,
    };
    let c = sde.coefs(t_star);
    let v = single_var(&c);
    let d = single_gaussian().dim() as f64;
    let want = d.sqrt() * plateau_bias(v, snr, c.sigma);
    let run = || -> Result<Vec<f64>> {
        let model = fixture.oracle(&single_gaussian())?;
        [256, 1024, 4096]
            .iter()
            .map(|&n| {
                exact_weak_error(
                    &stopped,
                    solver,
                    model.clone(),
                    fixture.param.clone(),
                    grid,
                    n,
                    &fixture.target,
                )
            })
            .collect()
    };
    match run() {
        Ok(errors) => {
            let gaps: Vec<f64> = errors.iter().map(|e| (e - want).abs()).collect();
            let pass = gaps[2] <= 0.1 * want && gaps[2] < gaps[0];
            report.push(
                plugin,
                check,
                format!(
                    "{} at N = 4096 ({:+.1}%)",
                    num(errors[2]),
                    100.0 * (errors[2] - want) / want
                ),
                format!("plateau {}", num(want)),
                "± 10%, approached as N grows",
                pass,
                format!(
                    "the corrector does not settle at its Langevin fixed point: weak error at N = 256, 1024, 4096: {}, {}, {}",
                    num(errors[0]),
                    num(errors[1]),
                    num(errors[2])
                ),
            );
        }
        Err(e) => report.error(plugin, check, e),
    }
}

/// Step counts of the strong-order fit, and the reference's.
const STRONG_STEPS: [usize; 8] = [16, 32, 64, 128, 256, 512, 1024, 2048];
const STRONG_REFERENCE_STEPS: usize = 1 << 14;
const STRONG_SAMPLES: usize = 128;

/// The strong order on a Brownian path shared across step counts: from the same exact p_T
/// starts of the single Gaussian, with the noise of every step read off one Brownian tree
/// (`BrownianNoise`), the RMS distance at t_ε to the same solver with 2^14 steps, fitted on the
/// tail over N ≤ 2048, within ± 0.3 of the claim.
fn strong_order(
    report: &mut Report,
    fixture: &Fixture<'_>,
    plugin: &str,
    solver: &Arc<dyn Solver>,
    sde_name: &str,
    sde: &Arc<dyn ForwardSde>,
    claim: f64,
) {
    let grid = solver.claims().natural_grid;
    let check = format!("strong order on {sde_name}, {grid} grid (shared Brownian path)");
    let run = |target: &Target| -> Result<Vec<f64>> {
        let spec = single_gaussian();
        let noise = Arc::new(BrownianNoise::new(sde.t_eps(), sde.t_max(), 24)?);
        let start = exact_start(&spec, &**sde, STRONG_SAMPLES)?;
        // The reference on the host in f64; the runs fitted on the target.
        let end = |steps: usize, on: &Target| -> Result<Vec<f64>> {
            let model = fixture.oracle_on(&spec, on, fixture.param.clone())?;
            let pipeline = Pipeline::builder()
                .sde(sde.clone())
                .param(fixture.param.clone())
                .model(model)
                .solver(solver.clone())
                .steps(steps)
                .grid(grid)
                .chunk_rows(None)
                .noise(noise.clone())
                .device(on.device.clone())
                .dtype(on.dtype)
                .seed(RUN_SEED)
                .build()?;
            host_vec(
                &pipeline
                    .run(State::new(on.put(&start)?, sde.t_max(), 0))?
                    .state
                    .x,
            )
        };
        let reference = end(STRONG_REFERENCE_STEPS, &Target::default())?;
        STRONG_STEPS
            .iter()
            .map(|&n| {
                let got = end(n, target)?;
                Ok((got
                    .iter()
                    .zip(&reference)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
                    / got.len() as f64)
                    .sqrt())
            })
            .collect()
    };
    let fit = OrderFit {
        steps: &STRONG_STEPS,
        claim,
        tolerance: 0.3,
        tolerance_text: "± 0.3 (tail fit, N ≤ 2048, reference 2^14 steps)",
        what: "the pathwise error on a shared Brownian path",
    };
    let scale = single_var(&sde.coefs(sde.t_max())).sqrt();
    order_rows(report, fixture, plugin, check, &fit, scale, run);
}

/// How an order check is judged: the tolerance on the fitted order and its words.
struct OrderFit<'a> {
    steps: &'a [usize],
    claim: f64,
    tolerance: f64,
    tolerance_text: &'a str,
    /// What falls, for the failure message ("the weak error").
    what: &'a str,
}

/// Fits the tail order of `errors` over `fit.steps` and reports it against the claim (or the
/// error that stopped the measurement).
fn push_order(
    report: &mut Report,
    plugin: &str,
    check: String,
    fit: &OrderFit<'_>,
    errors: Result<Vec<f64>>,
) {
    let errors = match errors {
        Ok(e) => e,
        Err(e) => return report.error(plugin, check, e),
    };
    let fitted = crate::fit::tail_order(fit.steps, &errors);
    let curve: Vec<String> = fit
        .steps
        .iter()
        .zip(&errors)
        .map(|(n, e)| format!("{n}:{}", num(*e)))
        .collect();
    tracing::info!(plugin, check, errors = %curve.join(" "), "error curve");
    report.push(
        plugin,
        check,
        fitted.map_or("no points above 1e-11".into(), num),
        num(fit.claim),
        fit.tolerance_text,
        fitted.is_some_and(|p| (p - fit.claim).abs() <= fit.tolerance),
        match fitted {
            Some(p) => format!(
                "{} falls at order {p:.2}, not the claimed {}: doubling N divides it by {:.1} where order {} divides it by {:.0}; errors by N {}",
                fit.what,
                fit.claim,
                2f64.powf(p),
                fit.claim,
                2f64.powf(fit.claim),
                curve.join(", ")
            ),
            None => format!(
                "{} has no three points above 1e-11 to fit: errors by N {}",
                fit.what,
                curve.join(", ")
            ),
        },
    );
}

/// The rows of an order check. On the reference target (the CPU in f64) the order fitted on
/// the error curve `run(target)`. Elsewhere the order is fitted on the host's f64 curve, since
/// f32 rounding (~1e-6) floors a fourth-order method's error within two doublings of its
/// asymptotic range; and a second row checks that the target's curve is that curve up to its
/// rounding, |e_target(N) − e_f64(N)| ≤ [`ROUNDING_PER_STEP`] · N ε · scale at every N,
/// `scale` the magnitude of the values stepped.
fn order_rows(
    report: &mut Report,
    fixture: &Fixture<'_>,
    plugin: &str,
    check: String,
    fit: &OrderFit<'_>,
    scale: f64,
    run: impl Fn(&Target) -> Result<Vec<f64>>,
) {
    let target = &fixture.target;
    if target.is_reference() {
        return push_order(report, plugin, check, fit, run(target));
    }
    let host = run(&Target::default());
    let on_target = run(target);
    let agree = format!(
        "{check}: {} agrees with f64 within rounding",
        target.label()
    );
    match (&host, on_target) {
        (Ok(want), Ok(got)) => {
            let scale = scale.max(1.0);
            let worst = fit
                .steps
                .iter()
                .zip(want.iter().zip(&got))
                .map(|(n, (w, g))| (g - w).abs() / (*n as f64 * target.epsilon() * scale))
                .fold(0.0, f64::max);
            let curve: Vec<String> = fit
                .steps
                .iter()
                .zip(want.iter().zip(&got))
                .map(|(n, (w, g))| format!("{n}: {} vs {}", num(*g), num(*w)))
                .collect();
            report.push(
                plugin,
                agree,
                format!("{worst:.3} N ε"),
                "0",
                format!("≤ {ROUNDING_PER_STEP} N ε × {}", num(scale)),
                worst <= ROUNDING_PER_STEP,
                format!(
                    "the {} run strays from the f64 run by more than rounding: errors by N (target vs f64) {}",
                    target.label(),
                    curve.join(", ")
                ),
            );
        }
        (_, Err(e)) => report.error(plugin, agree, e),
        (Err(_), _) => {}
    }
    push_order(
        report,
        plugin,
        format!("{check} (f64 on the host)"),
        fit,
        host,
    );
}

/// Rounding allowed per step, in epsilons of the target's dtype, in [`order_rows`]. Measured
/// worst cases: 0.35 (rk4 on linear_flow, the CPU in f32) and 2.1 (euler on linear_flow,
/// CUDA on an H100, whose kernels divide and exponentiate to a few ulps). A solver computing
/// something else misses by its own error, 1e4 N ε and more at N = 16.
pub const ROUNDING_PER_STEP: f64 = 8.0;

/// Samples in the paired comparison against the reference.
pub const PAIRED_SAMPLES: usize = 2_000;
/// Steps of the RK4 reference (λ-uniform).
pub const REFERENCE_STEPS: usize = 1 << 13;

/// The RMS distance, sample by sample from the same exact p_T starts, between a deterministic
/// solver at its default schedule and the fixed-step RK4 reference with 2^13 λ-uniform steps.
/// It passes within the SW2 noise floor's threshold, mean + 3 sd (per coordinate, as SW2 is
/// per direction), the same bar as the SW2 row: the solver's own error is then within what
/// 20,000 exact samples can resolve. On `mix8` the RMS of a first-order method is carried by
/// the few trajectories that start near a boundary between modes and end in the other mode:
/// euler with 1,000 uniform steps on ve gives 0.0545 per coordinate from 4 such flips in
/// 2,000 samples, 0.0099 without them (halving with the step as order 1 should); flips fall
/// only as the error itself does, so that RMS falls like N^{−1/2}.
fn paired_error(
    report: &mut Report,
    fixture: &mut Fixture<'_>,
    plugin: &str,
    solver: &Arc<dyn Solver>,
    sde_name: &str,
    sde: &Arc<dyn ForwardSde>,
    spec: &MixtureSpec,
) -> Result<()> {
    let reference = fixture.paired_reference(spec, sde_name, sde)?;
    let model = fixture.oracle(spec)?;
    let target = &fixture.target;
    let pipeline = Pipeline::builder()
        .sde(sde.clone())
        .param(fixture.param.clone())
        .model(model)
        .solver(solver.clone())
        .seed(RUN_SEED)
        .device(target.device.clone())
        .dtype(target.dtype)
        .build()?;
    let schedule = pipeline.discretization();
    let start = target.put(&exact_start(spec, &**sde, PAIRED_SAMPLES)?)?;
    let got = host_vec(&pipeline.run(State::new(start, sde.t_max(), 0))?.state.x)?;
    // Per coordinate: a displacement δ projects onto a random unit direction with RMS ‖δ‖/√d,
    // which is what the sliced W2 floor it is judged against resolves.
    let rms = (got
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / got.len() as f64)
        .sqrt();
    let floor = fixture.floor(spec, sde_name, &**sde)?.1;
    report.push(
        plugin,
        format!(
            "paired RMS error per coordinate vs RK4 (2^13 λ-uniform steps) on {} ({sde_name}, {} {} steps)",
            spec.name, schedule.steps, schedule.grid
        ),
        num(rms),
        "0",
        format!(
            "≤ SW2 floor {} + 3 × {} = {}",
            num(floor.mean),
            num(floor.sd),
            num(floor.threshold())
        ),
        rms <= floor.threshold(),
        "the solver's samples stray from the exact flow by more than exact sampling can resolve at its default schedule",
    );
    Ok(())
}

fn weak_order(
    report: &mut Report,
    fixture: &Fixture<'_>,
    plugin: &str,
    solver: &dyn Solver,
    sde_name: &str,
    sde: &dyn ForwardSde,
) {
    let claims = solver.claims();
    let Some(claim) = claimed_order(claims.order) else {
        return;
    };
    let check = format!(
        "weak order on {sde_name}, {} grid (single Gaussian, exact propagation)",
        claims.natural_grid
    );
    let run = |on: &Target| -> Result<Vec<f64>> {
        let model = fixture.oracle_on(&single_gaussian(), on, fixture.param.clone())?;
        ORDER_STEPS
            .iter()
            .map(|&n| {
                exact_weak_error(
                    sde,
                    solver,
                    model.clone(),
                    fixture.param.clone(),
                    claims.natural_grid,
                    n,
                    on,
                )
            })
            .collect()
    };
    let fit = OrderFit {
        steps: &ORDER_STEPS,
        claim,
        tolerance: 0.25,
        tolerance_text: "± 0.25 (tail fit, N ≤ 4096)",
        what: "the weak error",
    };
    let scale = single_var(&sde.coefs(sde.t_max())).sqrt();
    order_rows(report, fixture, plugin, check, &fit, scale, run);
}

fn exact_start(spec: &MixtureSpec, sde: &dyn ForwardSde, n: usize) -> Result<Tensor> {
    let c = sde.coefs(sde.t_max());
    let x = spec
        .mixture()?
        .marginal(c.alpha, c.sigma)?
        .sample(START_SEED, 0, n);
    Ok(Tensor::from_vec(x, (n, spec.dim()), &Device::Cpu)?)
}

fn sw2_at_default(
    report: &mut Report,
    fixture: &mut Fixture<'_>,
    plugin: &str,
    solver: &Arc<dyn Solver>,
    sde_name: &str,
    sde: &Arc<dyn ForwardSde>,
    spec: &MixtureSpec,
    param_name: &str,
    param: Arc<dyn Parameterization>,
) -> Result<()> {
    let target = fixture.target.clone();
    let model = fixture.oracle_on(spec, &target, param.clone())?;
    let pipeline = Pipeline::builder()
        .sde(sde.clone())
        .param(param)
        .model(model)
        .solver(solver.clone())
        .seed(RUN_SEED)
        .device(target.device.clone())
        .dtype(target.dtype)
        .build()?;
    let schedule = pipeline.discretization();
    let start = target.put(&exact_start(spec, &**sde, SAMPLES)?)?;
    let out = pipeline.run(State::new(start, sde.t_max(), 0))?;
    let claimed_nfe = (solver.claims().nfe_per_step * schedule.steps) as u64;
    report.push(
        plugin,
        format!(
            "NFE counted at default ({sde_name}{}{param_name}, {} steps)",
            if param_name.is_empty() { "" } else { " × " },
            schedule.steps
        ),
        out.nfe.to_string(),
        claimed_nfe.to_string(),
        "exact",
        out.nfe == claimed_nfe,
        "the solver evaluates the model a different number of times than nfe_per_step × steps",
    );
    let samples = host_vec(&out.state.x)?;
    // A plateauing solver is allowed its closed-form Langevin bias at t_ε on the narrowest
    // mode (DESIGN.md "Decisions").
    let allowance = match solver.claims().order {
        Order::Plateau { snr } => {
            let c = sde.coefs(sde.t_eps());
            let var = c.alpha * c.alpha * spec.min_axis_variance() + c.sigma * c.sigma;
            plateau_bias(var, snr, c.sigma)
        }
        _ => 0.0,
    };
    let (sw, floor) = fixture.floor(spec, sde_name, &**sde)?;
    let d = sw.distance(&samples)?;
    report.push(
        plugin,
        format!(
            "SW2 on {} ({sde_name}{}{param_name}, {} {} steps, exact p_T start)",
            spec.name,
            if param_name.is_empty() { "" } else { " × " },
            schedule.steps,
            schedule.grid
        ),
        num(d),
        format!("floor {} ± {}", num(floor.mean), num(floor.sd)),
        if allowance > 0.0 {
            format!(
                "≤ {} + plateau {}",
                num(floor.threshold()),
                num(allowance)
            )
        } else {
            format!("≤ {}", num(floor.threshold()))
        },
        d <= floor.threshold() + allowance,
        "samples are further from the exact law than exact samples are: the solver is biased at its default schedule",
    );
    Ok(())
}

fn small_run(
    fixture: &Fixture<'_>,
    solver: &Arc<dyn Solver>,
    sde: &Arc<dyn ForwardSde>,
    steps: usize,
    dtype: DType,
) -> Result<Pipeline> {
    let on = Target::new(fixture.target.device.clone(), dtype);
    Pipeline::builder()
        .sde(sde.clone())
        .param(fixture.param.clone())
        .model(fixture.oracle_on(&ring(), &on, fixture.param.clone())?)
        .solver(solver.clone())
        .steps(steps)
        .grid(solver.claims().natural_grid)
        .seed(RUN_SEED)
        .device(on.device)
        .dtype(dtype)
        .build()
}

fn finite_everywhere(
    report: &mut Report,
    fixture: &Fixture<'_>,
    plugin: &str,
    solver: &Arc<dyn Solver>,
    sde_name: &str,
    sde: &Arc<dyn ForwardSde>,
) {
    let mut failures = Vec::new();
    for steps in FINITE_STEPS {
        let outcome =
            small_run(fixture, solver, sde, steps, fixture.target.dtype).and_then(|p| p.sample(64));
        match outcome {
            Ok(out) if out.nfe == (solver.claims().nfe_per_step * steps) as u64 => {}
            Ok(out) => failures.push(format!("{steps} steps: {} NFE", out.nfe)),
            Err(e) => failures.push(format!("{steps} steps: {e}")),
        }
    }
    report.push(
        plugin,
        format!("finite with NFE as claimed at 1–2,000 steps ({sde_name}, ring)"),
        format!(
            "{}/{}",
            FINITE_STEPS.len() - failures.len(),
            FINITE_STEPS.len()
        ),
        format!("{}/{}", FINITE_STEPS.len(), FINITE_STEPS.len()),
        "all",
        failures.is_empty(),
        failures.join("; "),
    );
}

fn bit_identical(
    report: &mut Report,
    fixture: &Fixture<'_>,
    plugin: &str,
    solver: &Arc<dyn Solver>,
    sde_name: &str,
    sde: &Arc<dyn ForwardSde>,
) -> Result<()> {
    let steps = solver.default_discretization(&**sde).steps;
    let pipeline = small_run(fixture, solver, sde, steps, DType::F32)?;
    let bits = |n: usize| -> Result<Vec<Vec<u32>>> {
        let x = pipeline
            .sample(n)?
            .state
            .x
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?;
        Ok(x.iter()
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect())
    };
    let big = *BATCHES.iter().max().unwrap_or(&1);
    let reference = bits(big)?;
    let mut mismatches = Vec::new();
    for n in BATCHES.iter().copied().filter(|n| *n != big) {
        if bits(n)?[..] != reference[..n] {
            mismatches.push(format!("batch {n}"));
        }
    }
    if bits(big)? != reference {
        mismatches.push("rerun".into());
    }
    report.push(
        plugin,
        format!("sample i bit-identical in batches {BATCHES:?} and on rerun ({sde_name}, f32)"),
        if mismatches.is_empty() { "identical".into() } else { format!("differs: {}", mismatches.join(", ")) },
        "identical",
        "bitwise",
        mismatches.is_empty(),
        "a sample depends on its batch-mates or on the run: draw noise only through ctx.standard_normal and keep state in State",
    );
    Ok(())
}
