//! The [`Solver`] trait, its declared [`SolverClaims`], and the [`StepContext`] a step sees.

use std::{cell::Cell, fmt::Debug};

use candle_core::Tensor;
use serde::Serialize;

use crate::{
    Denoiser, ForwardSde, Prediction, Result, Rows, State, Time, TimeCoefs,
    adaptive::Adaptive,
    grid::GridKind,
    noise::{NoiseRequest, NoiseSource},
};

/// A solver's convergence claim, which conformance measures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Order {
    /// A deterministic method of this order.
    Ode(f64),
    /// A stochastic method with these weak and strong orders.
    Sde {
        /// The weak order (error in law).
        weak: f64,
        /// The strong order (pathwise error on a shared Brownian path).
        strong: f64,
    },
    /// No convergence order: a bias that does not shrink with the step. As N → ∞ the law
    /// follows the fixed point of Langevin steps `x ← x + ε ŝ + sqrt(2ε) z` with the
    /// batch-free step `ε = 2 (r σ_t)²` (PC's corrector, MATH.md §5), which on N(μ, C I) has
    /// variance C/(1 − ε/(2C)) = C/(1 − r² σ_t²/C) — at most 1/(1 − r²) times C.
    Plateau {
        /// The corrector's signal-to-noise ratio r.
        snr: f64,
    },
    /// No convergence claim: a stochastic sampler tuned for quality at a few steps whose law
    /// as N → ∞ depends on its parameters (EDM's churn with S_noise ≠ 1, or churn confined
    /// to [S_min, S_max]). Conformance judges it by sampling quality at its defaults only.
    Unclaimed,
}

/// A corrector's signal-to-noise ratio r ([`Order::Plateau`]), checked to lie in (0, 1) for
/// `solver`'s `snr` field: the plateau inflates the variance by up to 1/(1 − r²), unbounded
/// at r = 1.
pub fn corrector_snr(solver: &str, snr: f64) -> Result<f64> {
    if !(snr > 0.0 && snr < 1.0) {
        return Err(crate::Error::invalid(
            solver,
            "snr",
            format!(
                "snr = {snr} must lie in (0, 1): the plateau inflates the variance by up to 1/(1 − snr²)"
            ),
        ));
    }
    Ok(snr)
}

/// Which equation a solver integrates (MATH.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Equation {
    /// The reverse-time SDE.
    ReverseSde,
    /// The probability-flow ODE.
    ProbabilityFlowOde,
}

impl std::fmt::Display for Equation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ReverseSde => "reverse-time SDE",
            Self::ProbabilityFlowOde => "probability-flow ODE",
        })
    }
}

/// What a solver declares about itself; conformance checks every field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SolverClaims {
    /// The convergence order.
    pub order: Order,
    /// Model evaluations per step.
    pub nfe_per_step: usize,
    /// Whether a step draws noise.
    pub stochastic: bool,
    /// Whether a step is affine in x for an affine score, x_s = A x_t + b + C z (so weak error
    /// can be propagated exactly on a single Gaussian).
    pub affine: bool,
    /// The equation integrated.
    pub equation: Equation,
    /// The grid the order is claimed on (conformance fits the order there): uniform in t for
    /// Runge–Kutta methods, log-SNR for exponential integrators, quadratic for the SDE
    /// solvers stepping in t.
    pub natural_grid: GridKind,
}

/// A step count and grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Discretization {
    /// Steps.
    pub steps: usize,
    /// Grid.
    pub grid: GridKind,
}

/// What every step of a run shares: the SDE, the model (counted) and the noise source with
/// the run's seed. A solver reaches the noise only through [`StepContext::standard_normal`],
/// so every draw is keyed by (seed, sample, draw index) and counted.
#[derive(Clone, Copy)]
pub struct RunContext<'a> {
    sde: &'a dyn ForwardSde,
    denoiser: &'a Denoiser,
    noise: &'a dyn NoiseSource,
    seed: u64,
}

impl<'a> RunContext<'a> {
    /// A run on `sde` reading `denoiser`, drawing from `noise` with `seed`.
    pub fn new(
        sde: &'a dyn ForwardSde,
        denoiser: &'a Denoiser,
        noise: &'a dyn NoiseSource,
        seed: u64,
    ) -> Self {
        Self {
            sde,
            denoiser,
            noise,
            seed,
        }
    }

    /// The context of one step of this run.
    pub fn step(&self, span: StepSpan) -> StepContext<'a> {
        StepContext {
            sde: self.sde,
            denoiser: self.denoiser,
            noise: self.noise,
            seed: self.seed,
            from: span.from,
            to: span.to,
            step: span.step,
            steps: span.steps,
            rows: None,
            cond: None,
            draws: Cell::new(0),
            draw_calls: Cell::new(0),
        }
    }

    /// The context of one attempt of an adaptive run, each row stepping from its own time in
    /// `from` to its own time in `to`. `from` and `to` (one time for every row) are NaN
    /// there, so a solver that reads them instead of [`StepContext::span`] fails the loop's
    /// NaN check rather than stepping the wrong rows.
    pub fn step_rows(
        &self,
        from: Rows<TimeCoefs>,
        to: Rows<TimeCoefs>,
        step: usize,
    ) -> StepContext<'a> {
        let nan = TimeCoefs {
            t: f64::NAN,
            alpha: f64::NAN,
            sigma: f64::NAN,
            f: f64::NAN,
            g2: f64::NAN,
            lambda: f64::NAN,
        };
        let mut ctx = self.step(StepSpan {
            from: nan,
            to: nan,
            step,
            steps: 0,
        });
        ctx.rows = Some((from, to));
        ctx
    }
}

/// Where one step goes: the coefficients at its two ends and its place in the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSpan {
    /// Coefficients at the step's start.
    pub from: TimeCoefs,
    /// Coefficients at the step's end.
    pub to: TimeCoefs,
    /// This step's index, from 0.
    pub step: usize,
    /// The number of steps in the run.
    pub steps: usize,
}

/// Everything one step from `from.t` to `to.t` may use: the SDE, the model (counted), the
/// noise (through [`standard_normal`](Self::standard_normal) only), and the step's place in
/// the run. Built by [`RunContext::step`].
pub struct StepContext<'a> {
    /// The forward SDE.
    pub sde: &'a dyn ForwardSde,
    /// The model, read through the parameterization.
    pub denoiser: &'a Denoiser,
    noise: &'a dyn NoiseSource,
    seed: u64,
    /// Coefficients at the step's start.
    pub from: TimeCoefs,
    /// Coefficients at the step's end.
    pub to: TimeCoefs,
    /// This step's index, from 0.
    pub step: usize,
    /// The number of steps in the run (0 in an adaptive run: not known in advance).
    pub steps: usize,
    rows: Option<(Rows<TimeCoefs>, Rows<TimeCoefs>)>,
    cond: Option<Tensor>,
    draws: Cell<u64>,
    draw_calls: Cell<u64>,
}

impl<'a> StepContext<'a> {
    /// This step for `state`'s rows: their labels ([`State::cond`]) go with every model call.
    pub(crate) fn for_state(mut self, state: &State) -> Self {
        self.cond = state.cond().cloned();
        self
    }

    /// The step's ends: one time for every row ([`from`](Self::from), [`to`](Self::to)), or
    /// each row's own in an adaptive run.
    pub fn span(&self) -> (Time, Time) {
        match &self.rows {
            None => (Time::Call(self.from), Time::Call(self.to)),
            Some((from, to)) => (Time::Rows(from.clone()), Time::Rows(to.clone())),
        }
    }

    /// Whether each row steps from its own time (an adaptive run).
    pub fn per_row(&self) -> bool {
        self.rows.is_some()
    }

    /// The signed step h = t_from − t_to (positive when integrating toward the data).
    pub fn h(&self) -> f64 {
        self.from.t - self.to.t
    }

    /// Whether this is the run's last step.
    pub fn is_last(&self) -> bool {
        self.step + 1 == self.steps
    }

    /// Evaluates the model at `(x, c)` with the rows' labels: one NFE (two when guided).
    pub fn eval(&self, x: &Tensor, c: &TimeCoefs) -> Result<Prediction<'a>> {
        self.eval_at(x, &Time::Call(*c))
    }

    /// Evaluates the model at `x` and `time` (per call, or per row in an adaptive run) with
    /// the rows' labels.
    pub fn eval_at(&self, x: &Tensor, time: &Time) -> Result<Prediction<'a>> {
        match &self.cond {
            Some(cond) => self.denoiser.eval_cond(x, time, Some(cond)),
            None => self.denoiser.eval_at(x, time),
        }
    }

    /// The coefficients at any time `t` (for a stage between `from` and `to`).
    pub fn coefs(&self, t: f64) -> TimeCoefs {
        self.sde.coefs(t)
    }

    /// Standard normal noise shaped like `state.x`, keyed by (seed, sample, draw index); each
    /// call in a step takes the next draw indices.
    pub fn standard_normal(&self, state: &State) -> Result<Tensor> {
        let rows = state.rows()?;
        let cols = state.x.elem_count() / rows.max(1);
        let req = NoiseRequest {
            seed: self.seed,
            sample_offset: state.sample_offset,
            rows,
            cols,
            draw_offset: state.draws + self.draws.get(),
            index_in_step: self.draw_calls.get(),
            t_from: self.from.t,
            t_to: self.to.t,
        };
        self.draws.set(self.draws.get() + cols as u64);
        self.draw_calls.set(self.draw_calls.get() + 1);
        let z = self
            .noise
            .standard_normal(&req, state.x.dtype(), state.x.device())?;
        Ok(z.reshape(state.x.shape())?)
    }

    /// One Langevin step toward p_to of size `eps` ([`Order::Plateau`]'s):
    /// x ← x + ε ŝ(x, to) + sqrt(2ε) z, one evaluation, then one standard normal draw.
    pub fn langevin(&self, state: &State, eps: f64) -> Result<Tensor> {
        let score = self.eval(&state.x, &self.to)?.score()?;
        let z = self.standard_normal(state)?;
        crate::ops::lin3(1.0, &state.x, eps, &score, (2.0 * eps).sqrt(), &z)
    }

    /// Calls to [`StepContext::standard_normal`] in this step so far.
    pub fn draw_calls(&self) -> u64 {
        self.draw_calls.get()
    }

    /// Draw indices taken in this step so far.
    pub fn draws_taken(&self) -> u64 {
        self.draws.get()
    }
}

/// What a step returns: the next state and, for embedded methods, a local error estimate.
#[derive(Debug, Clone)]
pub struct Step {
    /// The state at `to.t`. The loop sets its `t`, `step`, `draws` and `sample_offset`.
    pub state: State,
    /// An estimate of the local error per integrated component (x, then the log-density
    /// change when the state carries one), for adaptive stepping; none for fixed-step methods.
    pub error_estimate: Option<Vec<Tensor>>,
}

impl Step {
    /// A step with no error estimate.
    pub fn to(state: State) -> Self {
        Self {
            state,
            error_estimate: None,
        }
    }
}

/// Maps the state from `ctx.from.t` to `ctx.to.t`. Solvers are immutable (`&self`); any
/// multistep history lives in the [`State`].
pub trait Solver: Send + Sync + Debug {
    /// The solver's claims.
    fn claims(&self) -> SolverClaims;

    /// The default step count and grid on `sde` (at most 1,000 NFE).
    fn default_discretization(&self, sde: &dyn ForwardSde) -> Discretization;

    /// One step.
    fn step(&self, ctx: &StepContext<'_>, state: &State) -> Result<Step>;

    /// Model evaluations a run of `steps` steps costs per sample: `nfe_per_step × steps`
    /// unless the last step costs less (EDM's samplers end with an Euler step: 2N − 1).
    /// Conformance counts every run against it.
    fn nfe(&self, steps: usize) -> usize {
        self.claims().nfe_per_step * steps
    }

    /// Whether [`step`](Self::step) integrates a likelihood's augmented state (the extras of
    /// [`crate::likelihood`]) in either direction of time: a deterministic PF-ODE method in t
    /// ([`crate::rk::RkSolver`]). The pipeline refuses a likelihood with any other solver.
    fn integrates_likelihood(&self) -> bool {
        false
    }

    /// An adaptive solver's tolerances and controller: the loop then chooses each row's steps
    /// from [`Step::error_estimate`] instead of walking a grid. `None` (the default): the
    /// solver steps on the run's grid.
    fn adaptive(&self) -> Option<Adaptive> {
        None
    }

    /// dy/dt at the state, per integrated component (x, then the log-density change when the
    /// state carries one), at each row's time in `ctx`'s [`span`](StepContext::span) start:
    /// one NFE. The adaptive loop chooses each row's first step from it (and hands it to the
    /// first step as [`State::first_stage`]). Only adaptive solvers need it.
    fn derivative(&self, ctx: &StepContext<'_>, state: &State) -> Result<Vec<Tensor>> {
        let _ = (ctx, state);
        Err(crate::Error::Msg(format!(
            "{self:?} is not adaptive: it has no derivative for an initial step"
        )))
    }
}
