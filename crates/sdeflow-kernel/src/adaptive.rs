//! Adaptive stepping, each sample on its own steps: tolerances, a PI step-size controller,
//! and the loop that runs an adaptive solver ([`Solver::adaptive`]) from t₀ to t₁.
//!
//! Every row keeps its own time t_i, step h_i and controller memory. An attempt advances
//! every unfinished row from t_i to t_i ± h_i in one batched call (the model evaluated at
//! per-row times, [`crate::Time::Rows`]); the solver's embedded estimate gives each row's error
//! norm, the weighted RMS over all its integrated components (x, and the log-density change
//! when the state carries one, so a likelihood is controlled too):
//!
//! `‖e‖_i = sqrt( (1/D_i) Σ_c (e_c / (atol + rtol · max(|y_c|, |ŷ_c|)))² )`
//!
//! (Hairer, Nørsett & Wanner I, §II.4, (4.11)). A row accepts when ‖e‖ ≤ 1 and proposes its
//! next step with a PI controller (MATH.md §9), h ← h · clamp(s · ‖e‖^{−β₁} ·
//! ‖e_prev‖^{β₂}, f_min, f_max), never growing right after a rejection; a rejected row
//! retries with h · clamp(s · ‖e‖^{−β₁}, f_min, 1). Nothing a row decides reads another row, so a
//! sample's steps are the same in any batch (as long as the model's rows are independent,
//! which chunked evaluation guarantees). Finished rows leave the batch; NFE are counted per
//! row.
//!
//! The first step is Hairer's starting-step algorithm (HNW I, §II.4, p. 169; scipy's
//! `select_initial_step`): two evaluations, the first of which is the first step's first
//! stage.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::{
    Denoiser, Error, ForwardSde, Result, Rows, Solver, State, TimeCoefs,
    likelihood::{components, with_components},
    solver::RunContext,
};

/// An adaptive solver's tolerances and budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerances {
    /// Relative tolerance, in (0, 1).
    pub rtol: f64,
    /// Absolute tolerance, > 0.
    pub atol: f64,
    /// The smallest step |h| in t before a row is declared stalled (an error), ≥ 0; steps
    /// are also never below 16 ulp of t.
    pub min_step: f64,
    /// The most model evaluations one sample may take before the run stops with an error.
    pub max_nfe: u64,
    /// The first step |h|, or `None` for Hairer's starting-step algorithm (2 NFE).
    pub first_step: Option<f64>,
}

/// A PI step-size controller.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Controller {
    /// The safety factor s < 1.
    pub safety: f64,
    /// The exponent β₁ of the current error.
    pub beta1: f64,
    /// The exponent β₂ of the previous accepted step's error (0: an I controller).
    pub beta2: f64,
    /// The smallest factor a step may shrink by.
    pub min_factor: f64,
    /// The largest factor a step may grow by.
    pub max_factor: f64,
}

impl Controller {
    /// The PI controller of MATH.md §9 (Gustafsson's, Hairer & Wanner II §IV.2; Söderlind
    /// 2002) for a method whose error estimate is of order q: with k = q + 1, β₁ = 0.7/k,
    /// β₂ = 0.4/k (0.14 and 0.08 for Dormand–Prince), safety 0.9, factors in [0.2, 5].
    pub fn pi(error_order: u32) -> Self {
        let k = f64::from(error_order + 1);
        Self {
            safety: 0.9,
            beta1: 0.7 / k,
            beta2: 0.4 / k,
            min_factor: 0.2,
            max_factor: 5.0,
        }
    }

    /// The factor of the next step after an accepted step with error `err` (≤ 1), the previous
    /// accepted error `prev` and whether the step before it was rejected.
    pub fn accepted(&self, err: f64, prev: f64, after_reject: bool) -> f64 {
        let err = err.max(1e-10);
        let raw = self.safety * err.powf(-self.beta1) * prev.powf(self.beta2);
        let f = raw.clamp(self.min_factor, self.max_factor);
        if after_reject { f.min(1.0) } else { f }
    }

    /// The factor of the retry after a rejected step with error `err` (> 1, or not finite).
    pub fn rejected(&self, err: f64) -> f64 {
        if !err.is_finite() {
            return self.min_factor;
        }
        (self.safety * err.powf(-self.beta1)).clamp(self.min_factor, 1.0)
    }
}

/// What an adaptive solver declares: its tolerances, its controller and the orders of its
/// pair (the main method's order p and the estimate's q).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Adaptive {
    /// Tolerances and budget.
    pub tolerances: Tolerances,
    /// The step-size controller.
    pub controller: Controller,
    /// The order p of the solution carried forward.
    pub order: u32,
}

impl std::fmt::Display for Adaptive {
    /// "adaptive, rtol …, atol …": how a run with it steps, for a label or a summary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "adaptive, rtol {:e}, atol {:e}",
            self.tolerances.rtol, self.tolerances.atol
        )
    }
}

impl Adaptive {
    /// Checks every field, naming `plugin` and the field.
    pub fn validate(&self, plugin: &str) -> Result<()> {
        let t = &self.tolerances;
        let bad = |field: &str, why: String| Err(Error::invalid(plugin, field, why));
        if !(t.rtol > 0.0 && t.rtol < 1.0) {
            return bad("rtol", format!("{} is not in (0, 1)", t.rtol));
        }
        if !(t.atol > 0.0 && t.atol.is_finite()) {
            return bad(
                "atol",
                format!("{} is not a positive finite number", t.atol),
            );
        }
        if !(t.min_step >= 0.0 && t.min_step.is_finite()) {
            return bad(
                "min_step",
                format!("{} is not a finite number ≥ 0", t.min_step),
            );
        }
        if t.max_nfe < 10 {
            return bad(
                "max_nfe",
                format!("{} is too small: one attempt costs several", t.max_nfe),
            );
        }
        if let Some(h) = t.first_step
            && !(h > 0.0 && h.is_finite())
        {
            return bad(
                "first_step",
                format!("{h} is not a positive finite step (or None: automatic)"),
            );
        }
        let c = &self.controller;
        let valid = c.safety > 0.0
            && c.safety < 1.0
            && c.beta1 > 0.0
            && c.beta2 >= 0.0
            && c.min_factor > 0.0
            && c.min_factor < 1.0
            && c.max_factor > 1.0
            && c.max_factor.is_finite();
        if !valid {
            return bad("controller", format!("{c:?} is not a valid PI controller"));
        }
        Ok(())
    }
}

/// What an adaptive solver's config says (every field optional):
/// `dopri5(rtol: 1e-5, atol: 1e-5, min_step: 1e-10, max_nfe: 20000, first_step: None)`.
///
/// The defaults are score_sde's for its PF-ODE sampler and likelihood (`rtol = atol = 1e-5`,
/// scipy's RK45); the budget stops a run whose samples need more than 20,000 evaluations
/// each, rather than let it run for hours.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveParams {
    /// Relative tolerance, in (0, 1). Default 1e-5.
    pub rtol: f64,
    /// Absolute tolerance, > 0. Default 1e-5.
    pub atol: f64,
    /// The smallest step in t before a sample is declared stalled. Default 1e-10.
    pub min_step: f64,
    /// The most NFE one sample may take. Default 20,000.
    pub max_nfe: u64,
    /// The first step, or `None` (default): Hairer's starting-step algorithm.
    pub first_step: Option<f64>,
}

impl Default for AdaptiveParams {
    fn default() -> Self {
        Self {
            rtol: 1e-5,
            atol: 1e-5,
            min_step: 1e-10,
            max_nfe: 20_000,
            first_step: None,
        }
    }
}

impl AdaptiveParams {
    /// The solver's [`Adaptive`] for a pair of orders p(q): [`Controller::pi`] for q.
    pub fn spec(&self, order: u32, error_order: u32) -> Adaptive {
        Adaptive {
            tolerances: Tolerances {
                rtol: self.rtol,
                atol: self.atol,
                min_step: self.min_step,
                max_nfe: self.max_nfe,
                first_step: self.first_step,
            },
            controller: Controller::pi(error_order),
            order,
        }
    }
}

/// Per sample: what an adaptive run cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RowStats {
    /// Model evaluations of each sample (each batched call it took part in).
    pub nfe: Vec<u64>,
    /// Accepted steps of each sample.
    pub accepted: Vec<u32>,
    /// Rejected steps of each sample.
    pub rejected: Vec<u32>,
}

impl RowStats {
    /// The samples' NFE: mean, min and max.
    pub fn nfe_spread(&self) -> (f64, u64, u64) {
        let sum: u64 = self.nfe.iter().sum();
        (
            sum as f64 / self.nfe.len().max(1) as f64,
            self.nfe.iter().copied().min().unwrap_or(0),
            self.nfe.iter().copied().max().unwrap_or(0),
        )
    }

    fn new(n: usize) -> Self {
        Self {
            nfe: vec![0; n],
            accepted: vec![0; n],
            rejected: vec![0; n],
        }
    }
}

/// One row's clock: its time, next step and controller memory.
#[derive(Debug, Clone, Copy)]
struct Clock {
    t: f64,
    h: f64,
    prev_err: f64,
    after_reject: bool,
}

/// Rows `idx` (positions in `state`) of every rows-first tensor of `state`.
fn select(state: &State, idx: &[u32]) -> Result<State> {
    let device = state.x.device();
    let ids = Tensor::from_slice(idx, idx.len(), device)?;
    let pick = |t: &Tensor| -> Result<Tensor> { Ok(t.index_select(&ids, 0)?) };
    let mut out = state.with_x(pick(&state.x)?);
    out.extras = state
        .extras
        .iter()
        .map(|(k, v)| Ok((k.clone(), pick(v)?)))
        .collect::<Result<BTreeMap<_, _>>>()?;
    out.first_stage = state
        .first_stage
        .as_ref()
        .map(|ks| ks.iter().map(pick).collect::<Result<Vec<_>>>())
        .transpose()?;
    out.t_rows = state
        .t_rows
        .as_ref()
        .map(|ts| idx.iter().map(|&i| ts[i as usize]).collect());
    for h in &mut out.history {
        h.x0_hat = pick(&h.x0_hat)?;
    }
    Ok(out)
}

/// Row-wise `if accept { new } else { old }`.
fn choose(accept: &Tensor, new: &Tensor, old: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1; new.rank().max(1)];
    shape[0] = new.dim(0)?;
    let mask = accept.reshape(shape)?.broadcast_as(new.shape())?;
    Ok(mask.where_cond(new, old)?)
}

/// Each row's weighted RMS norm of `errors` against the scale atol + rtol·max(|y|, |ŷ|).
fn error_norms(
    errors: &[Tensor],
    y: &[Tensor],
    y_new: &[Tensor],
    tol: &Tolerances,
) -> Result<Vec<f64>> {
    rms_rows(errors, |m| {
        let (a, b) = (
            y[m].to_dtype(DType::F64)?.abs()?,
            y_new[m].to_dtype(DType::F64)?.abs()?,
        );
        Ok(a.maximum(&b)?.affine(tol.rtol, tol.atol)?)
    })
}

/// Each row's RMS over every element of `v` divided by `scale(m)` for component m.
fn rms_rows(v: &[Tensor], scale: impl Fn(usize) -> Result<Tensor>) -> Result<Vec<f64>> {
    let n = v[0].dim(0)?;
    let mut sum = Tensor::zeros(n, DType::F64, v[0].device())?;
    let mut count = 0usize;
    for (m, e) in v.iter().enumerate() {
        let per = e.elem_count() / n.max(1);
        count += per;
        let r = (e.to_dtype(DType::F64)? / scale(m)?)?
            .sqr()?
            .reshape((n, per))?
            .sum(1)?;
        sum = (sum + r)?;
    }
    Ok(sum
        .affine(1.0 / count.max(1) as f64, 0.0)?
        .sqrt()?
        .to_vec1::<f64>()?)
}

/// Runs `solver` adaptively on `state` (every row at `state.t`) to `t_end`, in either
/// direction; returns the state with every row at `t_end` and each row's cost. `denoiser`
/// is the run's counted model (`ctx`'s), read for the NFE each attempt took.
pub(crate) fn integrate(
    solver: &dyn Solver,
    spec: &Adaptive,
    sde: &dyn ForwardSde,
    run: &RunContext<'_>,
    denoiser: &Denoiser,
    state: State,
    t_end: f64,
    progress: &dyn Fn(usize, usize),
) -> Result<(State, RowStats)> {
    let tol = &spec.tolerances;
    let n = state.rows()?;
    let t0 = state.t;
    let span = (t_end - t0).abs();
    let dir = if t_end >= t0 { 1.0 } else { -1.0 };
    let mut stats = RowStats::new(n);
    if n == 0 || span == 0.0 {
        return Ok((state, stats));
    }
    let name = format!("{solver:?}");
    // Below a few ulps of the dtype no step can meet the tolerance: say so now rather than
    // after the steps have shrunk to nothing.
    let eps = match state.x.dtype() {
        DType::F64 => f64::EPSILON,
        DType::F32 => f64::from(f32::EPSILON),
        _ => 1e-3,
    };
    if tol.rtol < 4.0 * eps {
        return Err(Error::invalid(
            name,
            "rtol",
            format!(
                "{:e} is below what {:?} resolves (4 ε = {:e}); run in f64 or raise rtol",
                tol.rtol,
                state.x.dtype(),
                4.0 * eps
            ),
        ));
    }
    let at = |ts: &[f64]| Rows::<TimeCoefs>::at(sde, ts);
    let calls = || denoiser.nfe();
    // Rows still running: their positions in the input, and their compact state and clocks.
    let mut active: Vec<usize> = (0..n).collect();
    let mut live = state;
    live.t_rows = Some(vec![t0; n]);
    let mut clocks: Vec<Clock>;
    // The first step: Hairer's starting-step algorithm, unless given.
    {
        let before = calls();
        let ctx = run
            .step_rows(at(&vec![t0; n]), at(&vec![t0; n]), 0)
            .for_state(&live);
        let f0 = solver.derivative(&ctx, &live)?;
        let y0 = components(&live);
        let h = match tol.first_step {
            Some(h) => vec![h.min(span); n],
            None => {
                let sc = |m: usize| {
                    Ok(y0[m]
                        .to_dtype(DType::F64)?
                        .abs()?
                        .affine(tol.rtol, tol.atol)?)
                };
                let d0 = rms_rows(&y0, sc)?;
                let d1 = rms_rows(&f0, sc)?;
                let h0: Vec<f64> = d0
                    .iter()
                    .zip(&d1)
                    .map(|(a, b)| {
                        if *a < 1e-5 || *b < 1e-5 {
                            1e-6
                        } else {
                            0.01 * a / b
                        }
                        .min(span)
                    })
                    .collect();
                let h0_rows = crate::PerRow::Rows(Rows::new(h0.iter().map(|h| dir * h).collect()));
                let y1: Vec<Tensor> = y0
                    .iter()
                    .zip(&f0)
                    .map(|(y, f)| Ok((y + crate::ops::scale(&h0_rows, f)?)?))
                    .collect::<Result<_>>()?;
                let trial = with_components(&live, y1)?;
                let t1: Vec<f64> = h0.iter().map(|h| t0 + dir * h).collect();
                let ctx = run.step_rows(at(&t1), at(&t1), 0).for_state(&live);
                let f1 = solver.derivative(&ctx, &trial)?;
                let diff: Vec<Tensor> = f1
                    .iter()
                    .zip(&f0)
                    .map(|(a, b)| Ok((a - b)?))
                    .collect::<Result<_>>()?;
                let d2 = rms_rows(&diff, sc)?;
                let p = f64::from(spec.order);
                (0..n)
                    .map(|i| {
                        let d2 = d2[i] / h0[i];
                        let big = d1[i].max(d2);
                        let h1 = if big <= 1e-15 {
                            (h0[i] * 1e-3).max(1e-6)
                        } else {
                            (0.01 / big).powf(1.0 / (p + 1.0))
                        };
                        (100.0 * h0[i]).min(h1).min(span)
                    })
                    .collect()
            }
        };
        let took = calls() - before;
        for s in &mut stats.nfe {
            *s += took;
        }
        live.first_stage = Some(f0);
        clocks = h
            .into_iter()
            .map(|h| Clock {
                t: t0,
                h,
                prev_err: 1e-4,
                after_reject: false,
            })
            .collect();
    }
    // Finished rows: (positions in the input, their final state).
    let mut done: Vec<(Vec<usize>, State)> = Vec::new();
    let mut attempt = 0usize;
    while !active.is_empty() {
        attempt += 1;
        let m = active.len();
        let from: Vec<f64> = clocks.iter().map(|c| c.t).collect();
        let lands: Vec<bool> = clocks
            .iter()
            .map(|c| (t_end - c.t).abs() <= c.h * (1.0 + 1e-12))
            .collect();
        let to: Vec<f64> = clocks
            .iter()
            .zip(&lands)
            .map(|(c, &l)| if l { t_end } else { c.t + dir * c.h })
            .collect();
        let ctx = run.step_rows(at(&from), at(&to), attempt).for_state(&live);
        let before = calls();
        let step = solver.step(&ctx, &live)?;
        let took = calls() - before;
        let errors = step.error_estimate.ok_or_else(|| {
            Error::Msg(format!("{name} is adaptive but returned no error estimate"))
        })?;
        let (y, y_new) = (components(&live), components(&step.state));
        if errors.len() != y.len() || y_new.len() != y.len() {
            return Err(Error::Msg(format!(
                "{name} returned {} error components and {} state components for {}",
                errors.len(),
                y_new.len(),
                y.len()
            )));
        }
        let norms = error_norms(&errors, &y, &y_new, tol)?;
        let mut accept = vec![0u8; m];
        let mut finished = Vec::new();
        for i in 0..m {
            let row = active[i];
            stats.nfe[row] += took;
            let (err, c) = (norms[i], &mut clocks[i]);
            let h_taken = (to[i] - c.t).abs();
            if err <= 1.0 {
                accept[i] = 1;
                stats.accepted[row] += 1;
                c.t = to[i];
                let f = spec.controller.accepted(err, c.prev_err, c.after_reject);
                c.h = h_taken * f;
                c.prev_err = err.max(1e-4);
                c.after_reject = false;
                if lands[i] {
                    finished.push(i);
                }
            } else {
                stats.rejected[row] += 1;
                c.h = h_taken * spec.controller.rejected(err);
                c.after_reject = true;
            }
            // A row still running whose next step is below the floor has stalled.
            let floor = tol.min_step.max(16.0 * f64::EPSILON * c.t.abs());
            if !(accept[i] == 1 && lands[i]) && c.h < floor {
                return Err(Error::Msg(format!(
                    "{name}: sample {} stalled at t = {:e}: the step fell to {:e}, below {:e} (error norm {err:e} at rtol {:e}, atol {:e}); loosen the tolerances, or look for a score that is not finite or not smooth there",
                    live.sample_offset + row as u64,
                    c.t,
                    c.h,
                    floor,
                    tol.rtol,
                    tol.atol
                )));
            }
            if stats.nfe[row] > tol.max_nfe {
                return Err(Error::Msg(format!(
                    "{name}: sample {} used its budget of {} NFE at t = {:e} of [{t0:e}, {t_end:e}] ({} steps accepted, {} rejected); raise max_nfe or loosen rtol {:e}, atol {:e}",
                    live.sample_offset + row as u64,
                    tol.max_nfe,
                    c.t,
                    stats.accepted[row],
                    stats.rejected[row],
                    tol.rtol,
                    tol.atol
                )));
            }
        }
        // Accepted rows take the new values, rejected ones keep theirs (and their first stage,
        // which is still F(y, t) at their unchanged state).
        let mask = Tensor::from_vec(accept, m, live.x.device())?;
        let mut next = live.with_x(choose(&mask, &step.state.x, &live.x)?);
        for (k, v) in &mut next.extras {
            if let Some(new) = step.state.extras.get(k) {
                *v = choose(&mask, new, v)?;
            }
        }
        next.first_stage = match (&step.state.first_stage, &live.first_stage) {
            (Some(new), Some(old)) => Some(
                new.iter()
                    .zip(old)
                    .map(|(a, b)| choose(&mask, a, b))
                    .collect::<Result<Vec<_>>>()?,
            ),
            _ => None,
        };
        next.t_rows = Some(clocks.iter().map(|c| c.t).collect());
        crate::pipeline::check_finite(
            &next,
            attempt,
            clocks.iter().map(|c| c.t).fold(f64::NAN, f64::min),
            Some(&active),
        )?;
        live = next;
        if !finished.is_empty() {
            let keep: Vec<u32> = (0..m)
                .filter(|i| !finished.contains(i))
                .map(|i| i as u32)
                .collect();
            let gone: Vec<u32> = finished.iter().map(|&i| i as u32).collect();
            done.push((
                finished.iter().map(|&i| active[i]).collect(),
                select(&live, &gone)?,
            ));
            let kept: Vec<usize> = keep.iter().map(|&i| active[i as usize]).collect();
            clocks = keep.iter().map(|&i| clocks[i as usize]).collect();
            live = select(&live, &keep)?;
            active = kept;
            progress(n - active.len(), n);
        }
    }
    // Back to the input's row order.
    let mut order = Vec::with_capacity(n);
    let mut parts = Vec::with_capacity(done.len());
    for (rows, part) in done {
        order.extend(rows);
        parts.push(part);
    }
    let mut inverse = vec![0u32; n];
    for (pos, &row) in order.iter().enumerate() {
        inverse[row] = pos as u32;
    }
    let cat = |get: &dyn Fn(&State) -> Tensor| -> Result<Tensor> {
        let ts: Vec<Tensor> = parts.iter().map(get).collect();
        Ok(Tensor::cat(&ts, 0)?)
    };
    let mut whole = parts[0].with_x(cat(&|s: &State| s.x.clone())?);
    for (k, v) in &mut whole.extras {
        *v = cat(&|s: &State| s.extras[k].clone())?;
    }
    // The parts' own times and caches are not the whole batch's: every row is at t_end now.
    whole.first_stage = None;
    whole.t_rows = None;
    whole.history.clear();
    let mut out = select(&whole, &inverse)?;
    out.t = t_end;
    out.step = stats.accepted.iter().copied().max().unwrap_or(0) as usize;
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For an order-4 estimate (k = 5) the controller has β₁ = 0.14, β₂ = 0.08; a step at the
    /// tolerance (‖e‖ = 1) after one at 1e-4 grows by 0.9 · 1e-4^0.08 ≈ 0.43; the factors are
    /// clamped to [0.2, 5]; right after a rejection a step never grows; a non-finite error
    /// shrinks the step by the smallest factor.
    #[test]
    fn the_controller_is_the_pi_of_math_md() {
        let c = Controller::pi(4);
        assert!((c.beta1 - 0.14).abs() < 1e-15 && (c.beta2 - 0.08).abs() < 1e-15);
        let f = c.accepted(1.0, 1e-4, false);
        assert!((f - 0.9 * 1e-4f64.powf(0.08)).abs() < 1e-15, "{f}");
        assert_eq!(c.accepted(1e-30, 1.0, false), 5.0);
        assert_eq!(c.accepted(1e-30, 1.0, true), 1.0);
        assert!(c.accepted(0.5, 0.5, true) <= 1.0);
        assert_eq!(c.rejected(f64::NAN), 0.2);
        assert_eq!(c.rejected(1e12), 0.2);
        let r = c.rejected(2.0);
        assert!((r - 0.9 * 2f64.powf(-0.14)).abs() < 1e-15 && r < 1.0, "{r}");
        // k = 3 for Bogacki–Shampine's order-2 estimate.
        let b = Controller::pi(2);
        assert!((b.beta1 - 0.7 / 3.0).abs() < 1e-15 && (b.beta2 - 0.4 / 3.0).abs() < 1e-15);
    }

    /// Every field is checked, and the message names it.
    #[test]
    fn bad_tolerances_name_their_field() {
        let ok = AdaptiveParams::default().spec(5, 4);
        assert!(ok.validate("dopri5").is_ok());
        type Edit = fn(&mut Adaptive);
        let cases: [(Edit, &str); 7] = [
            (|a| a.tolerances.rtol = 0.0, "`rtol`: 0 is not in (0, 1)"),
            (|a| a.tolerances.rtol = 1.5, "`rtol`"),
            (|a| a.tolerances.atol = -1.0, "`atol`"),
            (|a| a.tolerances.min_step = f64::NAN, "`min_step`"),
            (|a| a.tolerances.max_nfe = 3, "`max_nfe`"),
            (|a| a.tolerances.first_step = Some(0.0), "`first_step`"),
            (|a| a.controller.safety = 1.2, "`controller`"),
        ];
        for (edit, want) in cases {
            let mut a = ok;
            edit(&mut a);
            let msg = a.validate("dopri5").unwrap_err().to_string();
            assert!(
                msg.starts_with("dopri5: invalid ") && msg.contains(want),
                "{msg}"
            );
        }
    }

    /// The weighted RMS norm: one row's two components pooled, each element scaled by
    /// atol + rtol·max(|y|, |ŷ|).
    #[test]
    fn error_norms_are_per_row_weighted_rms() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let tol = AdaptiveParams {
            rtol: 0.1,
            atol: 1.0,
            ..AdaptiveParams::default()
        }
        .spec(5, 4)
        .tolerances;
        let e = [
            Tensor::new(&[[1.0f64, 2.0], [0.0, 0.0]], &dev)?,
            Tensor::new(&[3.0f64, 4.0], &dev)?,
        ];
        let y = [
            Tensor::new(&[[0.0f64, 10.0], [0.0, 0.0]], &dev)?,
            Tensor::new(&[0.0f64, 0.0], &dev)?,
        ];
        let y_new = [
            Tensor::new(&[[10.0f64, 0.0], [0.0, 0.0]], &dev)?,
            Tensor::new(&[0.0f64, 0.0], &dev)?,
        ];
        let n = error_norms(&e, &y, &y_new, &tol)?;
        // Row 0: scales 2, 2, 1 → (0.5² + 1² + 3²)/3; row 1: 4²/3.
        assert!((n[0] - ((0.25 + 1.0 + 9.0) / 3.0f64).sqrt()).abs() < 1e-15);
        assert!((n[1] - (16.0 / 3.0f64).sqrt()).abs() < 1e-15);
        Ok(())
    }
}
