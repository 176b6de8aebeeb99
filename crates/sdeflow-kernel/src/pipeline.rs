//! The pipeline: SDE, parameterization, model and solver composed through a typed builder,
//! and the loop that owns the grid, counts NFE and checks every step for NaN/Inf.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::{
    Denoiser, Error, ForwardSde, Parameterization, Result, ScoreModel, Solver, State,
    denoiser::DEFAULT_CHUNK_ROWS,
    grid::GridKind,
    noise::{NoiseRequest, NoiseSource, PhiloxNoise, Prefetch},
    ops::all_finite,
    resources::Estimate,
    solver::{Discretization, RunContext, StepSpan},
};

/// Bytes per grid step of the tables a pipeline keeps (the time, its coefficients, a
/// solver's per-step constants): a generous round figure for [`Estimate`]s.
pub const GRID_BYTES_PER_STEP: u128 = 256;
/// Copies of the state a run holds at once (x, a multistep solver's history, the noise, the
/// model's input and output, temporaries): a generous round figure for [`Estimate`]s.
pub const STATE_COPIES: u128 = 12;

/// A callback after every step: `(steps done, total steps)`.
#[derive(Clone)]
pub struct Progress(pub Arc<dyn Fn(usize, usize) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// Builds a [`Pipeline`]; every part is explicit, defaults are the solver's.
#[derive(Debug, Default)]
pub struct PipelineBuilder {
    sde: Option<Arc<dyn ForwardSde>>,
    param: Option<Arc<dyn Parameterization>>,
    model: Option<Arc<dyn ScoreModel>>,
    solver: Option<Arc<dyn Solver>>,
    steps: Option<usize>,
    grid: Option<GridKind>,
    seed: u64,
    chunk_rows: Option<Option<usize>>,
    noise: Option<Arc<dyn NoiseSource>>,
    device: Option<Device>,
    dtype: Option<DType>,
    capture_trajectory: bool,
    progress: Option<Progress>,
    denoise_final: bool,
    guidance: Option<f64>,
    keep_non_finite: bool,
}

impl PipelineBuilder {
    /// Let NaN and infinities through instead of stopping at the first step that makes them
    /// ([`Error::NonFinite`], with the step, t and the first offending samples). Off by
    /// default; for studying a diverging run. An adaptive solver stops on them regardless:
    /// its step control cannot go on.
    pub fn keep_non_finite(mut self, on: bool) -> Self {
        self.keep_non_finite = on;
        self
    }
    /// Classifier-free guidance with scale w for runs whose rows carry labels
    /// ([`State::with_cond`]); see [`Denoiser::guided`]. Default: none.
    pub fn guidance(mut self, w: Option<f64>) -> Self {
        self.guidance = w;
        self
    }
    /// The forward SDE.
    pub fn sde(mut self, sde: Arc<dyn ForwardSde>) -> Self {
        self.sde = Some(sde);
        self
    }
    /// The parameterization a network learns, its output read in. A model that fixes its own
    /// target (the oracle's is the score) takes none.
    pub fn param(mut self, param: Arc<dyn Parameterization>) -> Self {
        self.param = Some(param);
        self
    }
    /// The score model.
    pub fn model(mut self, model: Arc<dyn ScoreModel>) -> Self {
        self.model = Some(model);
        self
    }
    /// The solver.
    pub fn solver(mut self, solver: Arc<dyn Solver>) -> Self {
        self.solver = Some(solver);
        self
    }
    /// The step count (default: the solver's for this SDE).
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = Some(steps);
        self
    }
    /// The grid (default: the solver's for this SDE).
    pub fn grid(mut self, grid: GridKind) -> Self {
        self.grid = Some(grid);
        self
    }
    /// Forgets any step count and grid set so far: the solver's own (a config's `steps:` are
    /// for its sampling solver, not for another solver a job swaps in).
    pub fn solver_discretization(mut self) -> Self {
        self.steps = None;
        self.grid = None;
        self
    }
    /// The seed of every draw (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Model chunk rows; `None` turns chunking (and batch invariance) off. Default 1,024.
    pub fn chunk_rows(mut self, chunk_rows: Option<usize>) -> Self {
        self.chunk_rows = Some(chunk_rows);
        self
    }
    /// Replaces the noise source (tests: constants, Brownian paths).
    pub fn noise(mut self, noise: Arc<dyn NoiseSource>) -> Self {
        self.noise = Some(noise);
        self
    }
    /// The device (default CPU).
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }
    /// The dtype of samples (default f32).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }
    /// After the last step, replace x by Tweedie's x̂₀(x, t_ε) = E[x₀ | x_{t_ε}]: one more NFE,
    /// and samples of p₀ rather than p_{t_ε} (MATH.md §3, §5). Off by default.
    pub fn denoise_final(mut self, on: bool) -> Self {
        self.denoise_final = on;
        self
    }
    /// Keep x after every step.
    pub fn capture_trajectory(mut self, on: bool) -> Self {
        self.capture_trajectory = on;
        self
    }

    /// Calls `progress(done, total)` after every step (a progress bar).
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Checks the parts and fixes the schedule.
    pub fn build(self) -> Result<Pipeline> {
        let missing =
            |field: &str| Error::invalid("pipeline", field, "is required; set it on the builder");
        let sde = self.sde.ok_or_else(|| missing("sde"))?;
        let model = self.model.ok_or_else(|| missing("model"))?;
        let param = match (model.target(), self.param) {
            (Some(fixed), None) => fixed.plugin,
            (None, Some(param)) => param,
            (Some(fixed), Some(_)) => {
                return Err(Error::invalid(
                    "pipeline",
                    "param",
                    format!(
                        "the model predicts in its own target `{}()`: set no parameterization",
                        fixed.name
                    ),
                ));
            }
            (None, None) => {
                return Err(Error::invalid(
                    "pipeline",
                    "param",
                    "the model learns the target a parameterization names: set one",
                ));
            }
        };
        let solver = self.solver.ok_or_else(|| missing("solver"))?;
        if let Some(a) = solver.adaptive() {
            if let Some(steps) = self.steps {
                return Err(Error::invalid(
                    "pipeline",
                    "steps",
                    format!(
                        "{solver:?} chooses every sample's steps itself (rtol {:e}, atol {:e}): set no `steps: {steps}` and tighten or loosen its tolerances instead",
                        a.tolerances.rtol, a.tolerances.atol
                    ),
                ));
            }
            if let Some(grid) = self.grid {
                return Err(Error::invalid(
                    "pipeline",
                    "grid",
                    format!(
                        "{solver:?} chooses every sample's steps itself: set no grid (`{grid:?}`)"
                    ),
                ));
            }
        }
        let default = solver.default_discretization(&*sde);
        let schedule = Discretization {
            steps: self.steps.unwrap_or(default.steps),
            grid: self.grid.unwrap_or(default.grid),
        };
        if let Some(w) = self.guidance {
            if !w.is_finite() {
                return Err(Error::invalid(
                    "pipeline",
                    "guidance",
                    format!("{w} is not a finite scale"),
                ));
            }
            if model.classes().is_none() {
                return Err(Error::invalid(
                    "pipeline",
                    "guidance",
                    format!("{model:?} is not conditional: it takes no class labels to guide"),
                ));
            }
        }
        let chunk_rows = self.chunk_rows.unwrap_or(Some(DEFAULT_CHUNK_ROWS));
        if chunk_rows == Some(0) {
            return Err(Error::invalid(
                "pipeline",
                "chunk_rows",
                "must be at least 1 (or off)",
            ));
        }
        let tuned_rows = match schedule.grid {
            GridKind::Tuned { rows } => Some(rows),
            _ => None,
        };
        // The grid's tables, and a tuned grid's calibration solves, before any is allocated.
        let mut estimate = Estimate::new();
        estimate.add(
            "the grid's tables",
            schedule.steps as u128 + 1,
            GRID_BYTES_PER_STEP,
        );
        if let Some(rows) = tuned_rows {
            let cols: usize = model.sample_shape().iter().product();
            estimate.add(
                "the tuned grid's calibration",
                rows as u128 * cols as u128,
                STATE_COPIES * 8,
            );
        }
        estimate.ensure("use fewer steps (or calibration rows)", |why| {
            Error::invalid("pipeline", "steps", why)
        })?;
        let times = match tuned_rows {
            // A placeholder until the search below replaces it.
            Some(_) => GridKind::LogSnr.times(&*sde, schedule.steps)?,
            None => schedule.grid.times(&*sde, schedule.steps)?,
        };
        let mut pipeline = Pipeline {
            sde,
            param,
            model,
            solver,
            schedule,
            times,
            seed: self.seed,
            chunk_rows,
            noise: self.noise.unwrap_or_else(|| Arc::new(PhiloxNoise)),
            device: self.device.unwrap_or(Device::Cpu),
            dtype: self.dtype.unwrap_or(DType::F32),
            capture_trajectory: self.capture_trajectory,
            progress: self.progress,
            denoise_final: self.denoise_final,
            guidance: self.guidance,
            tuning: None,
            check_finite: !self.keep_non_finite,
        };
        if let Some(rows) = tuned_rows {
            let tuning = crate::tune::tune(&pipeline, schedule.steps, rows)?;
            pipeline.times.clone_from(&tuning.times);
            pipeline.tuning = Some(Arc::new(tuning));
        }
        Ok(pipeline)
    }
}

/// A composed sampler.
#[derive(Debug, Clone)]
pub struct Pipeline {
    sde: Arc<dyn ForwardSde>,
    param: Arc<dyn Parameterization>,
    model: Arc<dyn ScoreModel>,
    solver: Arc<dyn Solver>,
    schedule: Discretization,
    times: Vec<f64>,
    seed: u64,
    chunk_rows: Option<usize>,
    noise: Arc<dyn NoiseSource>,
    device: Device,
    dtype: DType,
    capture_trajectory: bool,
    progress: Option<Progress>,
    denoise_final: bool,
    guidance: Option<f64>,
    tuning: Option<Arc<crate::tune::Tuning>>,
    check_finite: bool,
}

/// What a run returns.
#[derive(Debug, Clone)]
pub struct SampleOutput {
    /// The final state (its `x` holds the samples).
    pub state: State,
    /// Model evaluations (counted batched calls, not claimed).
    pub nfe: u64,
    /// Rows evaluated, summed over every call (each sample's NFE, summed; padding excluded).
    pub row_evals: u64,
    /// Zero rows the chunking added.
    pub padded_rows: u64,
    /// (t, x) after every step, when capture is on (an adaptive run's rows share no steps:
    /// none).
    pub trajectory: Vec<(f64, Tensor)>,
    /// An adaptive run's cost per sample (`None` on a grid).
    pub rows: Option<crate::RowStats>,
}

impl Pipeline {
    /// A builder.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }
    /// The times t_0 = T > … > t_N = t_ε.
    pub fn times(&self) -> &[f64] {
        &self.times
    }
    /// What the search for a [tuned](GridKind::Tuned) grid chose and measured (`None` on a
    /// plain grid).
    pub fn tuning(&self) -> Option<&crate::tune::Tuning> {
        self.tuning.as_deref()
    }

    /// This pipeline on the grid `times` (T first, t_ε last).
    pub(crate) fn with_times(&self, times: Vec<f64>) -> Self {
        let mut p = self.clone();
        p.schedule.steps = times.len() - 1;
        p.times = times;
        p.progress = None;
        p.capture_trajectory = false;
        p.denoise_final = false;
        p
    }

    /// This pipeline with `solver` on the grid `times`.
    pub(crate) fn with_solver(&self, solver: Arc<dyn Solver>, times: Vec<f64>) -> Self {
        let mut p = self.with_times(times);
        p.solver = solver;
        p
    }

    /// The calibration rows of a tuned grid: `rows` prior draws with the run's seed XOR
    /// [`crate::tune::CALIBRATION_SEED`], carrying the labels 0, 1, …, K − 1 in turn when
    /// the model is conditional.
    pub(crate) fn calibration_state(&self, rows: usize) -> Result<State> {
        let mut cal = self.clone();
        cal.seed ^= crate::tune::CALIBRATION_SEED;
        let state = cal.prior_state(0, rows)?;
        match self.model.classes() {
            Some(k) => {
                state.with_cond(crate::tune::calibration_labels(rows, k)?.to_device(&self.device)?)
            }
            None => Ok(state),
        }
    }
    /// The step count and grid in use.
    pub fn discretization(&self) -> Discretization {
        self.schedule
    }
    /// The SDE.
    pub fn sde(&self) -> &dyn ForwardSde {
        &*self.sde
    }
    /// The solver.
    pub fn solver(&self) -> &dyn Solver {
        &*self.solver
    }
    /// Whether the run ends with Tweedie's denoising step (samples of p₀, not p_{t_ε}).
    pub fn denoises_final(&self) -> bool {
        self.denoise_final
    }
    /// Model evaluations per sample the run costs: the solver's ([`Solver::nfe`]), plus the final
    /// denoising step, twice over when guided (a run with labels); `None` for an adaptive
    /// solver, whose cost each run reports.
    pub fn claimed_nfe(&self) -> Option<u64> {
        if self.solver.adaptive().is_some() {
            return None;
        }
        let guided = 1 + u64::from(self.guidance.is_some_and(|w| w != 0.0));
        Some(guided * (self.solver.nfe(self.schedule.steps) as u64 + u64::from(self.denoise_final)))
    }

    /// The model as a run reads it: through the target, chunked, guided, with its weights off
    /// autograd's graph ([`ScoreModel::frozen`], sharing their storage, so a model still in
    /// training is read as it is now): a run records no graph that its detached outputs would
    /// drop, and frees each layer's activations as soon as the next is computed.
    fn sampling_denoiser(&self) -> Result<Denoiser> {
        Denoiser::new(
            self.model.frozen().unwrap_or_else(|| self.model.clone()),
            self.param.clone(),
            self.chunk_rows,
            None,
        )
        .guided(self.guidance)
    }

    /// x̂₀ at the rows of `x` at time `t`, read as a run reads the model (with the rows'
    /// `cond` and the run's guidance): what a trajectory's frames show.
    pub fn denoised(&self, x: &Tensor, t: f64, cond: Option<&Tensor>) -> Result<Tensor> {
        let denoiser = self.sampling_denoiser()?;
        let x = x.to_dtype(self.dtype)?.to_device(&self.device)?;
        denoiser
            .eval_cond(&x, &self.sde.coefs(t).into(), cond)?
            .x0()
    }
    /// The parameterization the model's output is read in (its target).
    pub fn param(&self) -> &dyn Parameterization {
        &*self.param
    }
    /// The score model.
    pub fn model(&self) -> &dyn ScoreModel {
        &*self.model
    }
    /// The dtype of samples.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The prior draw of samples `offset..offset + n`: the first state of a run.
    pub fn prior_state(&self, offset: u64, n: usize) -> Result<State> {
        let shape = self.model.sample_shape();
        let cols: usize = shape.iter().product();
        let req = NoiseRequest {
            seed: self.seed,
            sample_offset: offset,
            rows: n,
            cols,
            draw_offset: 0,
            index_in_step: 0,
            t_from: self.times[0],
            t_to: self.times[0],
        };
        let z = PhiloxNoise.standard_normal(&req, self.dtype, &self.device)?;
        let mut full = vec![n];
        full.extend(shape);
        self.start_state(self.sde.prior_sample(&z.reshape(full)?)?, offset)
    }

    /// The first state of a run from given samples `x` at T (`[n, ...]`: an nll run's
    /// latents, say), rows numbered from `offset`, in the run's dtype on its device, its noise
    /// counter past the prior's draws as [`prior_state`](Self::prior_state)'s is.
    pub fn start_state(&self, x: Tensor, offset: u64) -> Result<State> {
        let cols: usize = self.model.sample_shape().iter().product();
        let x = x.to_dtype(self.dtype)?.to_device(&self.device)?;
        let mut state = State::new(x, self.times[0], offset);
        state.draws = cols as u64;
        Ok(state)
    }

    /// Samples `0..n` from the prior to t_ε.
    pub fn sample(&self, n: usize) -> Result<SampleOutput> {
        self.sample_range(0, n)
    }

    /// Samples `offset..offset + n`: a shard gives the same rows as the whole job.
    pub fn sample_range(&self, offset: u64, n: usize) -> Result<SampleOutput> {
        self.run(self.prior_state(offset, n)?)
    }

    /// What a run of `rows` samples will hold at once: the state's copies, the model's
    /// working memory on one chunk, and the trajectory when it is captured.
    pub fn memory_estimate(&self, rows: usize) -> Estimate {
        let cols: u128 = self.model.sample_shape().iter().product::<usize>() as u128;
        let elem = self.dtype.size_in_bytes() as u128;
        let values = rows as u128 * cols;
        let mut e = Estimate::new();
        e.add("the state and its copies", values, STATE_COPIES * elem);
        let chunk = self.chunk_rows.map_or(rows, |c| c.min(rows)) as u128;
        e.add(
            "the model's working memory",
            chunk,
            u128::from(self.model.activation_bytes_per_row(self.dtype)),
        );
        if self.capture_trajectory {
            let frames = self.schedule.steps as u128 + 2;
            e.add("the trajectory", frames.saturating_mul(values), elem);
        }
        e
    }

    /// Runs the loop from a given state at T (exact p_T samples, a resumed state).
    pub fn run(&self, state: State) -> Result<SampleOutput> {
        self.memory_estimate(state.x.dim(0)?)
            .ensure("draw fewer samples at once", |why| {
                Error::invalid("pipeline", "samples", why)
            })?;
        let denoiser = self.sampling_denoiser()?;
        let span = tracing::debug_span!(
            "sample",
            steps = self.schedule.steps,
            rows = state.x.dim(0)?
        );
        let _enter = span.enter();
        let (mut state, mut trajectory, rows) = self.steps_over(&self.times, state, &denoiser)?;
        let steps = self.schedule.steps;
        let at_end = state.t == self.times[steps];
        if self.denoise_final && at_end {
            let c = self.sde.coefs(self.times[steps]);
            let x0 = denoiser
                .eval_cond(&state.x, &c.into(), state.cond())?
                .x0()?;
            if self.check_finite && !all_finite(&x0)? {
                return Err(Error::NonFinite {
                    what: "the final denoised samples".into(),
                    step: steps,
                    t: c.t,
                    rows: crate::ops::non_finite_rows(&x0, crate::error::NON_FINITE_ROWS)?
                        .into_iter()
                        .map(|i| state.sample_offset + i as u64)
                        .collect(),
                });
            }
            if self.capture_trajectory {
                trajectory.push((0.0, x0.clone()));
            }
            state.x = x0;
        }
        Ok(SampleOutput {
            state,
            nfe: denoiser.nfe(),
            row_evals: denoiser.row_evals(),
            padded_rows: denoiser.padded_rows(),
            trajectory,
            rows,
        })
    }

    /// The loop: steps from `times[state.step]` through `times` (decreasing to sample,
    /// increasing to encode), checking x and any likelihood component for NaN/Inf after every
    /// step; returns the last state and, when capture is on, (t, x) after every step. An
    /// adaptive solver goes from `times[0]` to the last time with each row on its own steps
    /// ([`crate::adaptive`]), and its per-row cost is returned too.
    #[allow(clippy::type_complexity)]
    fn steps_over(
        &self,
        times: &[f64],
        state: State,
        denoiser: &Denoiser,
    ) -> Result<(State, Vec<(f64, Tensor)>, Option<crate::RowStats>)> {
        crate::threads::on_workers(|| self.steps_here(times, state, denoiser))
    }

    /// [`steps_over`](Self::steps_over) on the current thread.
    #[allow(clippy::type_complexity)]
    fn steps_here(
        &self,
        times: &[f64],
        mut state: State,
        denoiser: &Denoiser,
    ) -> Result<(State, Vec<(f64, Tensor)>, Option<crate::RowStats>)> {
        // The next draws are computed while the model runs (the same bits: DESIGN.md "Noise").
        let noise = Prefetch::new(self.noise.clone());
        let steps = times.len() - 1;
        let first = state.step;
        let mut trajectory = Vec::new();
        let run = RunContext::new(&*self.sde, denoiser, &noise, self.seed);
        if let Some(spec) = self.solver.adaptive() {
            let progress = |done: usize, total: usize| {
                if let Some(p) = &self.progress {
                    (p.0)(done, total);
                }
            };
            let (end, stats) = crate::adaptive::integrate(
                &*self.solver,
                &spec,
                &*self.sde,
                &run,
                denoiser,
                state,
                times[steps],
                &progress,
            )?;
            return Ok((end, trajectory, Some(stats)));
        }
        for i in first..steps {
            let from = self.sde.coefs(times[i]);
            let to = self.sde.coefs(times[i + 1]);
            let ctx = run
                .step(StepSpan {
                    from,
                    to,
                    step: i,
                    steps,
                })
                .for_state(&state);
            let step = self.solver.step(&ctx, &state)?;
            let mut next = step.state;
            next.t = to.t;
            next.step = i + 1;
            next.draws = state.draws + ctx.draws_taken();
            next.sample_offset = state.sample_offset;
            if self.check_finite {
                check_finite(&next, i, to.t, None)?;
            }
            if self.capture_trajectory {
                trajectory.push((to.t, next.x.clone()));
            }
            state = next;
            if let Some(p) = &self.progress {
                (p.0)(i + 1, steps);
            }
            tracing::trace!(step = i, t = to.t, "step done");
        }
        Ok((state, trajectory, None))
    }

    /// log p_{t_ε}(x) for the rows of `x` (samples `offset..offset + n`, keyed for the probes):
    /// the PF-ODE with the log-density change integrated forward over this pipeline's grid
    /// reversed (t_ε to T), plus the prior's log-density at x(T) (MATH.md §6). Only a solver
    /// that [integrates a likelihood](Solver::integrates_likelihood) can; another is an error
    /// naming it.
    pub fn log_likelihood(
        &self,
        x: &Tensor,
        offset: u64,
        trace: crate::likelihood::Trace,
    ) -> Result<crate::likelihood::Likelihood> {
        use crate::likelihood::{DELTA_LOGP, Likelihood, PROBES, Trace, probes};
        if !self.solver.integrates_likelihood() {
            let claims = self.solver.claims();
            return Err(Error::invalid(
                "solver",
                "nll",
                format!(
                    "{:?} integrates the {} {} and cannot carry the log-density change forward; use a Runge–Kutta PF-ODE solver (euler, heun, rk4, dopri5, bosh3)",
                    self.solver,
                    claims.equation,
                    if claims.stochastic {
                        "with noise"
                    } else {
                        "in its own variables"
                    }
                ),
            ));
        }
        let n = x.dim(0)?;
        let sample: Vec<usize> = x.dims()[1..].to_vec();
        let x = x.to_dtype(self.dtype)?.to_device(&self.device)?;
        let times: Vec<f64> = self.times.iter().rev().copied().collect();
        let mut state = State::new(x, times[0], offset);
        let k = match trace {
            Trace::Exact => None,
            Trace::Hutchinson { probes: k, dist } => {
                if k == 0 {
                    return Err(Error::invalid("nll", "probes", "must be at least 1"));
                }
                let v = probes(
                    self.seed,
                    offset,
                    n,
                    &sample,
                    k,
                    dist,
                    (self.dtype, &self.device),
                )?;
                state.extras.insert(PROBES.into(), v);
                Some(k)
            }
        };
        let delta = match k {
            None => Tensor::zeros(n, self.dtype, &self.device)?,
            Some(k) => Tensor::zeros((n, k), self.dtype, &self.device)?,
        };
        state.extras.insert(DELTA_LOGP.into(), delta);
        // Weights off the graph: the trace's backward passes then stop at the input.
        let model = self.model.frozen().unwrap_or_else(|| self.model.clone());
        let denoiser = Denoiser::new(model, self.param.clone(), self.chunk_rows, None);
        let (end, _, rows) = self.steps_over(&times, state, &denoiser)?;
        let prior = self
            .sde
            .prior_log_prob(&end.x)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let delta = end
            .extras
            .get(DELTA_LOGP)
            .ok_or_else(|| Error::Msg("the solver dropped the log-density change".into()))?
            .to_dtype(DType::F64)?;
        let (delta, probe_se) = match k {
            None => (delta.to_vec1::<f64>()?, None),
            Some(k) => {
                let per = delta.to_vec2::<f64>()?;
                let mean: Vec<f64> = per
                    .iter()
                    .map(|p| p.iter().sum::<f64>() / k as f64)
                    .collect();
                let se = (k > 1).then(|| {
                    per.iter()
                        .zip(&mean)
                        .map(|(p, m)| {
                            let var =
                                p.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (k - 1) as f64;
                            (var / k as f64).sqrt()
                        })
                        .collect()
                });
                (mean, se)
            }
        };
        Ok(Likelihood {
            log_p: prior.iter().zip(&delta).map(|(p, d)| p + d).collect(),
            prior,
            delta,
            probe_se,
            latent: end.x,
            nfe: denoiser.nfe(),
            rows,
        })
    }
}

impl Pipeline {
    /// The continuous-time variational bound on the reverse SDE's negative log-likelihood of
    /// each row of `x` at t_ε (Song, Durkan, Murray & Ermon 2021, Theorem 1), started at t_ε:
    ///
    /// `L(x) = E[−log π(x_T)] + ∫_{t_ε}^T E[g² ∇·ŝ(x_t, t) + ½ g² ‖ŝ(x_t, t)‖² − f D] dt`,
    /// `x_t = α_{t|ε} x + σ_{t|ε} ε` (the forward transition from t_ε, MATH.md §5).
    ///
    /// This is Theorem 1's first form. Its second, the likelihood-weighted DSM loss
    /// `½ g² E‖ŝ − ∇ log p_{t|ε}‖² − ½ g² E‖∇ log p_{t|ε}‖²`, is equal in expectation (Stein's
    /// identity), but its estimate carries `g² ŝ·ε/σ_{t|ε}`, whose variance grows like
    /// 1/(t − t_ε) and is not integrable with t uniform; the divergence form has none.
    /// The prior term is in closed form for the SDE's N(0, p² I) prior; the integral is
    /// estimated with `samples` stratified times per row, t_j = t_ε + (j + u_j)(T − t_ε)/k, each
    /// with its own ε, drawn from the kernel's noise source keyed by (seed, row) — a row's
    /// bound is the same in any batch. The divergence is the model's closed form or D
    /// vector-Jacobian products ([`score_divergence`](crate::likelihood::score_divergence)).
    ///
    /// With the exact score and p_T in place of the prior the bound is tight: its expectation
    /// is −log p_{t_ε}(x) (the reverse SDE then has the forward process's marginals).
    pub fn variational_bound(
        &self,
        x: &Tensor,
        offset: u64,
        samples: usize,
    ) -> Result<crate::likelihood::Bound> {
        use crate::{
            PerRow, Rows,
            likelihood::{Bound, score_divergence},
            noise::{Stream, fill_normals_f64, philox_key, uniform_f64},
        };
        if samples < 2 {
            return Err(Error::invalid(
                "nll",
                "bound",
                format!(
                    "{samples} time samples per row: at least 2 are needed for a standard error"
                ),
            ));
        }
        let sde = &*self.sde;
        let n = x.dim(0)?;
        let sample: Vec<usize> = x.dims()[1..].to_vec();
        let d: usize = sample.iter().product();
        let host = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let (t0, t1) = (sde.t_eps(), sde.t_max());
        let (c0, ct) = (sde.coefs(t0), sde.coefs(t1));
        // α_{t|ε} and σ_{t|ε}, with σ²_{t|ε} free of cancellation near t_ε.
        let transition = |c: &crate::TimeCoefs| {
            let tr = crate::Transition::between(c, &c0);
            (tr.alpha, tr.std())
        };
        // E[−log N(x_T; 0, p² I)] with x_T = a x + s ε: (D/2) log 2πp² + (a²‖x‖² + s² D)/(2p²).
        let p2 = sde.prior_std().powi(2);
        let (a_t, s_t) = transition(&ct);
        let prior: Vec<f64> = host
            .chunks(d.max(1))
            .map(|row| {
                let sq: f64 = row.iter().map(|v| v * v).sum();
                0.5 * d as f64 * (2.0 * std::f64::consts::PI * p2).ln()
                    + (a_t * a_t * sq + s_t * s_t * d as f64) / (2.0 * p2)
            })
            .collect();
        let key = philox_key(self.seed, Stream::Bound);
        let model = self.model.frozen().unwrap_or_else(|| self.model.clone());
        let denoiser = Denoiser::new(model, self.param.clone(), self.chunk_rows, None);
        let span = t1 - t0;
        let mut integrand = vec![0.0f64; n * samples];
        // Rows in blocks, so that a block's n·k evaluation rows stay bounded.
        let block = (16_384 / samples).max(1);
        let mut eps = vec![0.0f64; d];
        for start in (0..n).step_by(block) {
            let m = block.min(n - start);
            let mut xt = Vec::with_capacity(m * samples * d);
            let mut coefs = Vec::with_capacity(m * samples);
            for i in start..start + m {
                let row = offset + i as u64;
                for j in 0..samples {
                    let t =
                        t0 + (j as f64 + uniform_f64(key, row, j as u64)) * span / samples as f64;
                    let c = sde.coefs(t);
                    let (a, s) = transition(&c);
                    fill_normals_f64(key, row, (j * d) as u64, &mut eps);
                    xt.extend(
                        host[i * d..(i + 1) * d]
                            .iter()
                            .zip(&eps)
                            .map(|(x, e)| a * x + s * e),
                    );
                    coefs.push(c);
                }
            }
            let mut shape = vec![m * samples];
            shape.extend_from_slice(&sample);
            let xt = Tensor::from_vec(xt, shape, &self.device)?.to_dtype(self.dtype)?;
            let time = PerRow::Rows(Rows::new(coefs.clone()));
            let (s, div) = score_divergence(&denoiser, &xt, &time, None)?;
            let sq = s
                .to_dtype(DType::F64)?
                .sqr()?
                .reshape((m * samples, d))?
                .sum(1)?;
            let (sq, div) = (
                sq.to_vec1::<f64>()?,
                div.to_dtype(DType::F64)?.to_vec1::<f64>()?,
            );
            for (r, c) in coefs.iter().enumerate() {
                integrand[start * samples + r] =
                    c.g2 * div[r] + 0.5 * c.g2 * sq[r] - c.f * d as f64;
            }
        }
        let (mut integral, mut se) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for vals in integrand.chunks(samples) {
            let k = samples as f64;
            let mean = vals.iter().sum::<f64>() / k;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (k - 1.0);
            integral.push(span * mean);
            se.push(span * (var / k).sqrt());
        }
        if integral.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "the variational bound's integral".into(),
                step: 0,
                t: t0,
                rows: integral
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| !v.is_finite())
                    .map(|(r, _)| offset + r as u64)
                    .take(crate::error::NON_FINITE_ROWS)
                    .collect(),
            });
        }
        Ok(Bound {
            value: prior.iter().zip(&integral).map(|(p, i)| p + i).collect(),
            se,
            prior,
            integral,
            samples,
            nfe: denoiser.nfe(),
        })
    }
}

/// Checks a step's result: x, and the log-density change when the state carries one, must be
/// finite (`step` and `t` say where, for the error, and `rows` maps the state's rows to sample
/// indices; `None`: the state's own offset onwards).
pub(crate) fn check_finite(
    next: &State,
    step: usize,
    t: f64,
    rows: Option<&[usize]>,
) -> Result<()> {
    let offending = |x: &Tensor| -> Result<Vec<u64>> {
        Ok(
            crate::ops::non_finite_rows(x, crate::error::NON_FINITE_ROWS)?
                .into_iter()
                .map(|i| next.sample_offset + rows.map_or(i, |r| r[i]) as u64)
                .collect(),
        )
    };
    if !all_finite(&next.x)? {
        return Err(Error::NonFinite {
            what: "samples".into(),
            step,
            t,
            rows: offending(&next.x)?,
        });
    }
    if let Some((delta, _)) = crate::likelihood::augmented(next)
        && !all_finite(delta)?
    {
        return Err(Error::NonFinite {
            what: "the log-density change".into(),
            step,
            t,
            rows: offending(delta)?,
        });
    }
    Ok(())
}
