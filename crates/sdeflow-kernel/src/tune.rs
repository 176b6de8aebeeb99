//! Tuned grids (MATH.md §5, "Grids chosen for the model"): the N-step grid on which a
//! deterministic solver lands closest to the exact PF-ODE endpoint, for this model and this
//! budget — the idea of "optimal steps" (Xue et al. 2024) and "align your steps" (Sabour,
//! Fidler & Kreis 2024), measured directly on the endpoint rather than through a bound.
//!
//! 1. **Calibration draws.** `rows` prior draws with the run's seed XOR a constant of their own
//!    ([`CALIBRATION_SEED`]): disjoint from every run's draws, whatever its sample range. A
//!    conditional model's rows carry the labels 0, 1, …, K − 1 in turn, and the run's guidance.
//! 2. **Reference.** RK4 ([`crate::rk::RK4`]) on M λ-uniform steps, M doubled from 64 until
//!    two successive references differ by at most 1% of the starting grid's error (RK4's own
//!    error is then about 1/15 of that difference), or M reaches [`MAX_REFERENCE_STEPS`].
//! 3. **Start.** The best of the plain grids — λ-uniform, Karras ρ ∈ {3, 5, 7, 10}, uniform
//!    and quadratic in t — by the RMS endpoint error per coordinate over the calibration rows.
//! 4. **Descent.** Each interior time, written as its fraction u_i = (λ_i − λ_0)/(λ_N − λ_0)
//!    of the way in λ, moves to the golden-section minimum of the error between its
//!    neighbours (so the grid stays strictly decreasing in t), in sweeps over i = 1 … N − 1,
//!    until a sweep gains less than 1% or [`MAX_SWEEPS`] sweeps are done.
//!
//! The result is never worse than the best plain grid on the calibration draws. The run's own
//! draws score it (`sdeflow check` prints the grid and both errors).

use candle_core::Tensor;

use crate::{Error, GridKind, Pipeline, Result, State, ops::host_f64, rk::RkSolver};

/// Calibration rows unless `tuned(rows: …)` says otherwise.
pub const DEFAULT_ROWS: usize = 256;
/// XOR-ed into the run's seed for the calibration draws ("tunegrid" in ASCII).
pub const CALIBRATION_SEED: u64 = 0x7475_6e65_6772_6964;
/// The most steps a grid is tuned for. The descent costs about
/// `MAX_SWEEPS · GOLDEN_EVALS · N²` solver steps (40·N²: 400 steps would be 6.4 million), and
/// beyond a few dozen steps the plain grids have converged (README, "Few steps").
pub const MAX_STEPS: usize = 64;
/// The most RK4 steps of the reference solve.
pub const MAX_REFERENCE_STEPS: usize = 4096;
/// The most coordinate sweeps.
pub const MAX_SWEEPS: usize = 4;
/// Golden-section evaluations per interior time and sweep.
const GOLDEN_EVALS: usize = 10;

/// What tuning chose and measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    /// The grid, T = t_0 > … > t_N = t_ε.
    pub times: Vec<f64>,
    /// The plain grid it started from.
    pub started_from: GridKind,
    /// RMS endpoint error per coordinate of the start, on the calibration rows.
    pub start_rmse: f64,
    /// RMS endpoint error per coordinate of the tuned grid, on the calibration rows.
    pub rmse: f64,
    /// RK4 steps of the reference.
    pub reference_steps: usize,
    /// Solver runs the search made.
    pub runs: usize,
    /// Calibration rows.
    pub rows: usize,
}

/// The plain grids the search starts from.
const FAMILIES: [GridKind; 7] = [
    GridKind::LogSnr,
    GridKind::Karras { rho: 3.0 },
    GridKind::Karras { rho: 5.0 },
    GridKind::Karras { rho: 7.0 },
    GridKind::Karras { rho: 10.0 },
    GridKind::Uniform,
    GridKind::Quadratic,
];

/// The RMS per coordinate of `a − b`.
fn rmse(a: &[f64], b: &[f64]) -> f64 {
    let sum: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    (sum / a.len().max(1) as f64).sqrt()
}

/// The search's state: the pipeline, the calibration start and the reference endpoint.
struct Search<'a> {
    pipeline: &'a Pipeline,
    start: State,
    reference: Vec<f64>,
    runs: usize,
}

impl Search<'_> {
    /// The endpoint of the pipeline's solver on `times`.
    fn endpoint(&mut self, times: &[f64]) -> Result<Vec<f64>> {
        self.runs += 1;
        let out = self
            .pipeline
            .with_times(times.to_vec())
            .run(self.start.clone())?;
        host_f64(&out.state.x)
    }

    /// The RMS endpoint error on `times`; a run that fails (a non-finite step) scores +∞.
    fn error(&mut self, times: &[f64]) -> f64 {
        match self.endpoint(times) {
            Ok(x) => {
                let e = rmse(&x, &self.reference);
                if e.is_finite() { e } else { f64::INFINITY }
            }
            Err(_) => f64::INFINITY,
        }
    }
}

/// The times of the fractions `u` (u_0 = 0 < … < u_N = 1 of the way from λ(T) to λ(t_ε)),
/// with the ends exact.
fn times_of(p: &Pipeline, u: &[f64]) -> Vec<f64> {
    let sde = p.sde();
    let (l0, l1) = (sde.log_snr(sde.t_max()), sde.log_snr(sde.t_eps()));
    let mut ts: Vec<f64> = u
        .iter()
        .map(|v| sde.t_of_log_snr(l0 + v * (l1 - l0)))
        .collect();
    let n = ts.len() - 1;
    ts[0] = sde.t_max();
    ts[n] = sde.t_eps();
    ts
}

/// The fractions of `times` (the inverse of [`times_of`]).
fn fractions_of(p: &Pipeline, times: &[f64]) -> Vec<f64> {
    let sde = p.sde();
    let (l0, l1) = (sde.log_snr(sde.t_max()), sde.log_snr(sde.t_eps()));
    times
        .iter()
        .map(|t| (sde.log_snr(*t) - l0) / (l1 - l0))
        .collect()
}

/// Whether `ts` decreases strictly.
fn decreasing(ts: &[f64]) -> bool {
    ts.windows(2).all(|w| w[0] > w[1])
}

/// Chooses the `steps`-step grid for `pipeline`'s model and solver from `rows` calibration
/// draws (the module's procedure). `pipeline`'s own grid is ignored.
pub fn tune(pipeline: &Pipeline, steps: usize, rows: usize) -> Result<Tuning> {
    let solver = pipeline.solver();
    let claims = solver.claims();
    if claims.stochastic || solver.adaptive().is_some() {
        return Err(Error::invalid(
            "grid",
            "tuned",
            format!(
                "a tuned grid is fitted to the deterministic PF-ODE endpoint; {solver:?} is {}: use a plain grid (log_snr, karras(rho: 7))",
                if claims.stochastic {
                    "stochastic"
                } else {
                    "adaptive"
                }
            ),
        ));
    }
    if rows == 0 || steps == 0 {
        return Err(Error::invalid(
            "grid",
            "tuned",
            format!("needs at least one step and one row (steps {steps}, rows {rows})"),
        ));
    }
    if steps > MAX_STEPS {
        return Err(Error::invalid("grid", "grid", too_many_steps(steps)));
    }
    let sde = pipeline.sde();
    let start = pipeline.calibration_state(rows)?;
    // The reference: RK4 on λ-uniform steps, refined until it has converged well below the
    // error of the first plain grid.
    let rk4 = std::sync::Arc::new(RkSolver::new(&crate::rk::RK4, 1)?);
    let reference_run = |m: usize| -> Result<Vec<f64>> {
        let times = GridKind::LogSnr.times(sde, m)?;
        let out = pipeline
            .with_solver(rk4.clone(), times)
            .run(start.clone())?;
        host_f64(&out.state.x)
    };
    let first = GridKind::LogSnr.times(sde, steps)?;
    let mut m = 64;
    let mut reference = reference_run(m)?;
    let mut search = Search {
        pipeline,
        start: start.clone(),
        reference: Vec::new(),
        runs: 0,
    };
    let first_x = search.endpoint(&first)?;
    loop {
        let finer = reference_run(2 * m)?;
        let change = rmse(&finer, &reference);
        let bar = 0.01 * rmse(&first_x, &finer);
        reference = finer;
        m *= 2;
        if change <= bar || 2 * m > MAX_REFERENCE_STEPS || change == 0.0 {
            break;
        }
    }
    search.reference = reference;
    // The best plain grid.
    let mut best: Option<(GridKind, Vec<f64>, f64)> = None;
    for family in FAMILIES {
        let Ok(times) = family.times(sde, steps) else {
            continue;
        };
        let e = search.error(&times);
        if best.as_ref().is_none_or(|(_, _, b)| e < *b) {
            best = Some((family, times, e));
        }
    }
    let Some((started_from, times, start_rmse)) = best else {
        return Err(Error::invalid(
            "grid",
            "tuned",
            format!("no plain grid of {steps} steps runs on this SDE"),
        ));
    };
    if !start_rmse.is_finite() {
        return Err(Error::invalid(
            "grid",
            "tuned",
            format!("{solver:?} fails on every plain grid of {steps} steps"),
        ));
    }
    // Coordinate descent on the interior fractions.
    let mut u = fractions_of(pipeline, &times);
    let mut err = start_rmse;
    let golden = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..MAX_SWEEPS {
        let before = err;
        for i in 1..steps {
            let (lo, hi) = (u[i - 1], u[i + 1]);
            // Keep a sliver from each neighbour so that the times stay distinct.
            let pad = 1e-6 * (hi - lo);
            let (mut a, mut b) = (lo + pad, hi - pad);
            let at = |v: f64, u: &mut Vec<f64>, s: &mut Search<'_>| -> f64 {
                let keep = u[i];
                u[i] = v;
                let ts = times_of(pipeline, u);
                let e = if decreasing(&ts) {
                    s.error(&ts)
                } else {
                    f64::INFINITY
                };
                u[i] = keep;
                e
            };
            let mut c = b - golden * (b - a);
            let mut d = a + golden * (b - a);
            let mut fc = at(c, &mut u, &mut search);
            let mut fd = at(d, &mut u, &mut search);
            for _ in 2..GOLDEN_EVALS {
                if fc < fd {
                    b = d;
                    d = c;
                    fd = fc;
                    c = b - golden * (b - a);
                    fc = at(c, &mut u, &mut search);
                } else {
                    a = c;
                    c = d;
                    fc = fd;
                    d = a + golden * (b - a);
                    fd = at(d, &mut u, &mut search);
                }
            }
            let (v, e) = if fc < fd { (c, fc) } else { (d, fd) };
            if e < err {
                u[i] = v;
                err = e;
            }
        }
        if err > 0.99 * before {
            break;
        }
    }
    let times = times_of(pipeline, &u);
    if !decreasing(&times) {
        return Err(Error::Msg(format!(
            "tuning produced a grid that does not decrease: {times:?}"
        )));
    }
    Ok(Tuning {
        times,
        started_from,
        start_rmse,
        rmse: err,
        reference_steps: m,
        runs: search.runs,
        rows,
    })
}

/// Labels 0, 1, …, K − 1 in turn for `rows` rows of a model with `classes` classes.
pub(crate) fn calibration_labels(rows: usize, classes: usize) -> Result<Tensor> {
    let labels: Vec<u32> = (0..rows)
        .map(|i| u32::try_from(i % classes.max(1)).unwrap_or(0))
        .collect();
    Ok(Tensor::new(labels.as_slice(), &candle_core::Device::Cpu)?)
}

/// Why a grid of `steps` steps is not tuned.
pub fn too_many_steps(steps: usize) -> String {
    format!(
        "a tuned grid is searched with about 40·N² solver steps, {} for N = {steps}; tune at most {MAX_STEPS} steps, or use `log_snr` or `karras(rho: 7.0)`, which converge at this many",
        40 * steps as u128 * steps as u128
    )
}
