//! Log-likelihoods through the probability-flow ODE (MATH.md §6).
//!
//! Along the PF-ODE dx/dt = F(x, t) = f x − ½ g² ŝ, the log-density changes by
//! d log p_t(x(t))/dt = −∇·F, so integrating forward from t_ε to T with the augmented component
//! Δ' = ∇·F = f D − ½ g² ∇·ŝ (D the sample's dimension), Δ(t_ε) = 0, gives
//! log p_{t_ε}(x) = log p_T(x(T)) + Δ(T).
//!
//! The state carries Δ as the extra [`DELTA_LOGP`] (`[n]`, or `[n, k]` with k Hutchinson
//! probes: one integral per probe, so their spread is the estimator's standard error) and the
//! probes as [`PROBES`], fixed for the whole solve (or the integrand is not a smooth ODE). A
//! solver that can integrate it ([`Solver::integrates_likelihood`](crate::Solver)) advances
//! both through [`AugmentedPfOde`]; the pipeline's loop runs it forward
//! ([`Pipeline::log_likelihood`](crate::Pipeline::log_likelihood)).
//!
//! The divergence ∇·ŝ per row is:
//! - exact, in closed form when the model offers it ([`ScoreModel::score_divergence`]: the
//!   oracle), else by D vector-Jacobian products through the model (autograd; for small D);
//! - Hutchinson's estimate (1/k) Σ_j v_jᵀ (∂ŝ/∂x) v_j with Rademacher or Gaussian probes from
//!   the kernel's noise source, through the model's closed-form Jacobian-vector products when
//!   it offers them ([`ScoreModel::score_jvp`]), else one vector-Jacobian product per probe.
//!
//! Each evaluation is one NFE (the backward passes are not model evaluations, but they cost
//! about as much: an exact trace through a network costs D of them).

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{
    Denoiser, Error, Result, ScoreModel, State, Time, TimeCoefs,
    noise::{Stream, fill_normals_f64, philox_key, uniform_f64},
    ops::{lin2, lin2_rows},
    rk::OdeField,
    solver::StepContext,
};

/// The state extra holding Δ, the integral of ∇·F so far: `[n]`, or `[n, k]` per probe.
pub const DELTA_LOGP: &str = "delta_logp";
/// The state extra holding Hutchinson's probes, `[n, k, ...]` (rows first, like every extra).
pub const PROBES: &str = "hutchinson_probes";

/// The distribution of Hutchinson's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// ±1 with probability ½ each: the lower variance for a symmetric Jacobian
    /// (2 Σ_{i≠l} J_il² against Gaussian's 2‖J‖_F²).
    Rademacher,
    /// Standard normal.
    Gaussian,
}

/// How the trace ∇·ŝ is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trace {
    /// Exactly: the model's closed form, or D vector-Jacobian products.
    Exact,
    /// Hutchinson's estimator with `probes` probes per sample of `dist`.
    Hutchinson {
        /// k ≥ 1.
        probes: usize,
        /// The probes' distribution.
        dist: Probe,
    },
}

/// k probes for rows `offset..offset + n` of shape `sample` (`[n, k, ...]`, f64 values in
/// `dtype` on `device`), keyed by (seed, row): row i's probes are the same in any batch.
pub fn probes(
    seed: u64,
    offset: u64,
    n: usize,
    sample: &[usize],
    k: usize,
    dist: Probe,
    (dtype, device): (DType, &Device),
) -> Result<Tensor> {
    probes_keyed(
        philox_key(seed, Stream::Hutchinson),
        offset,
        n,
        sample,
        k,
        dist,
        (dtype, device),
    )
}

/// [`probes`] from the Philox `key` (sliced score matching draws its projections afresh at
/// every training step: the key of (seed, step)).
pub fn probes_keyed(
    key: [u32; 2],
    offset: u64,
    n: usize,
    sample: &[usize],
    k: usize,
    dist: Probe,
    (dtype, device): (DType, &Device),
) -> Result<Tensor> {
    let d: usize = sample.iter().product();
    let mut v = vec![0.0f64; k * n * d];
    for i in 0..n {
        for j in 0..k {
            let out = &mut v[(i * k + j) * d..(i * k + j + 1) * d];
            let row = offset + i as u64;
            let first = (j * d) as u64;
            match dist {
                Probe::Gaussian => fill_normals_f64(key, row, first, out),
                Probe::Rademacher => {
                    for (m, o) in out.iter_mut().enumerate() {
                        *o = if uniform_f64(key, row, first + m as u64) < 0.5 {
                            -1.0
                        } else {
                            1.0
                        };
                    }
                }
            }
        }
    }
    let mut shape = vec![n, k];
    shape.extend_from_slice(sample);
    Ok(Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?)
}

/// ŝ at the rows of `x` at `time`, and ∇·ŝ per row: `[n]` exactly (`probes` = `None`), or
/// `[n, k]`, one Hutchinson estimate v_jᵀ (∂ŝ/∂x) v_j per probe of `probes` (`[n, k, ...]`).
/// One NFE on `denoiser`. Outputs are detached, in `x`'s dtype.
pub fn score_divergence(
    denoiser: &Denoiser,
    x: &Tensor,
    time: &Time,
    probes: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let n = x.dim(0)?;
    let d = x.elem_count() / n.max(1);
    let model: &dyn ScoreModel = denoiser.model();
    match probes {
        None => {
            if let Some(exact) = model.score_divergence(x, time) {
                denoiser.count_eval(n);
                let (s, div) = exact?;
                return Ok((s.to_dtype(x.dtype())?, div.to_dtype(x.dtype())?));
            }
        }
        Some(v) => {
            if let Some(exact) = model.score_jvp(x, time, v) {
                denoiser.count_eval(n);
                let (s, jv) = exact?;
                let k = v.dim(1)?;
                let est = (jv.to_dtype(v.dtype())? * v)?.reshape((n, k, d))?.sum(2)?;
                return Ok((s.to_dtype(x.dtype())?, est.to_dtype(x.dtype())?));
            }
        }
    }
    let (s, div) = by_autograd(denoiser, x, time, probes, None)?;
    Ok((s.detach(), div.detach()))
}

/// What a loss needs to differentiate ∇·ŝ with respect to the weights (implicit and sliced
/// score matching): ŝ and the divergence of [`score_divergence`] — exact by D vector-Jacobian
/// products, or one per probe — computed on autograd's graph, for the batch's conditioning
/// `cond` and a training step's dropout draws `key`. The denoiser must keep its graph and ask
/// its model for [second-order](crate::At::second_order) outputs, and the process must run
/// with `CANDLE_GRAD_DO_NOT_DETACH=1` ([`second_order_gradients`]).
pub fn score_divergence_on_graph(
    denoiser: &Denoiser,
    x: &Tensor,
    time: &Time,
    probes: Option<&Tensor>,
    (cond, key): (Option<&Tensor>, Option<crate::noise::RowKey>),
) -> Result<(Tensor, Tensor)> {
    by_autograd(denoiser, x, time, probes, Some((cond, key)))
}

/// Whether autograd's gradients are themselves differentiable in this thread: candle detaches
/// them unless `CANDLE_GRAD_DO_NOT_DETACH=1` was set before the thread's first backward pass.
pub fn second_order_gradients() -> Result<bool> {
    let x = Var::new(&[1.5f64], &Device::Cpu)?;
    let y = x.as_tensor().sqr()?.sum_all()?;
    let g = y
        .backward()?
        .get(x.as_tensor())
        .cloned()
        .ok_or_else(|| Error::Msg("autograd gave no gradient for x²".into()))?;
    Ok(g.track_op())
}

/// ŝ on the graph of a fresh leaf x, then one backward pass per direction: the divergence
/// exactly (`probes` = `None`, D passes) or one estimate per probe. `training`: the batch's
/// conditioning and dropout draws, and everything left on the graph (for a loss); otherwise
/// the denoiser's own conditioning.
fn by_autograd(
    denoiser: &Denoiser,
    x: &Tensor,
    time: &Time,
    probes: Option<&Tensor>,
    training: Option<(Option<&Tensor>, Option<crate::noise::RowKey>)>,
) -> Result<(Tensor, Tensor)> {
    let n = x.dim(0)?;
    let d = x.elem_count() / n.max(1);
    let leaf = Var::from_tensor(&x.detach())?;
    let s = match training {
        None => denoiser.eval_tracked(leaf.as_tensor(), time)?.score()?,
        Some((cond, Some(key))) => denoiser
            .eval_keyed(leaf.as_tensor(), time, cond, key)?
            .score()?,
        Some((cond, None)) => denoiser.eval_cond(leaf.as_tensor(), time, cond)?.score()?,
    };
    let flat = s.reshape((n, d))?;
    let grad_along = |w: &Tensor| -> Result<Tensor> {
        let grads = (&flat * w)?.sum_all()?.backward()?;
        let g = grads.get(leaf.as_tensor()).cloned().ok_or_else(|| {
            Error::Msg("the score does not depend on x: no gradient reaches it".into())
        })?;
        Ok(g.reshape((n, d))?)
    };
    let div = match probes {
        None => {
            let mut cols = Vec::with_capacity(d);
            for j in 0..d {
                let mut e = vec![0.0f64; d];
                e[j] = 1.0;
                let w = Tensor::from_vec(e, (1, d), x.device())?
                    .to_dtype(x.dtype())?
                    .broadcast_as((n, d))?;
                cols.push(grad_along(&w)?.narrow(1, j, 1)?);
            }
            Tensor::cat(&cols, 1)?.sum(1)?
        }
        Some(v) => {
            let k = v.dim(1)?;
            let mut ests = Vec::with_capacity(k);
            for j in 0..k {
                let w = v.narrow(1, j, 1)?.reshape((n, d))?.to_dtype(x.dtype())?;
                ests.push((grad_along(&w)? * &w)?.sum(1)?);
            }
            Tensor::stack(&ests, 1)?
        }
    };
    Ok((s, div))
}

/// The PF-ODE augmented with the log-density change: y = (x, Δ), F = (f x − ½ g² ŝ,
/// f D − ½ g² ∇·ŝ), with Hutchinson's `probes` (`[n, k, ...]`) or the exact trace, at one
/// time for every row or one per row.
pub struct AugmentedPfOde<'c, 'a> {
    /// The step's context (its counted model and SDE).
    pub ctx: &'c StepContext<'a>,
    /// The fixed probes, or `None` for the exact trace.
    pub probes: Option<&'c Tensor>,
}

impl OdeField for AugmentedPfOde<'_, '_> {
    fn eval(&self, y: &[Tensor], time: &Time) -> Result<Vec<Tensor>> {
        let x = &y[0];
        let n = x.dim(0)?;
        let d = (x.elem_count() / n.max(1)) as f64;
        let (s, div) = score_divergence(self.ctx.denoiser, x, time, self.probes)?;
        if let Time::Call(c) = time {
            let (f, half_g2) = c.ode_coefs();
            let dx = lin2(f, x, -half_g2, &s)?;
            let ddelta = div.affine(-half_g2, f * d)?;
            return Ok(vec![dx, ddelta]);
        }
        let (f, half_g2) = (time.map(|c| c.f), time.map(|c| -0.5 * c.g2));
        let dx = lin2_rows(&f, x, &half_g2, &s)?;
        let ddelta = lin2_rows(&half_g2, &div, &time.map(|c| c.f * d), &div.ones_like()?)?;
        Ok(vec![dx, ddelta])
    }

    fn coefs(&self, t: f64) -> TimeCoefs {
        self.ctx.coefs(t)
    }
}

/// The components of `state` an ODE solver integrates: x, then Δ when it carries a
/// likelihood.
pub fn components(state: &State) -> Vec<Tensor> {
    let mut y = vec![state.x.clone()];
    if let Some((delta, _)) = augmented(state) {
        y.push(delta.clone());
    }
    y
}

/// `state` with its integrated components replaced by `y` (x, then Δ when given): the
/// inverse of [`components`].
pub fn with_components(state: &State, y: Vec<Tensor>) -> Result<State> {
    let mut parts = y.into_iter();
    let x = parts
        .next()
        .ok_or_else(|| Error::Msg("a state needs x among its components".into()))?;
    let mut next = state.with_x(x);
    if let Some(delta) = parts.next() {
        next.extras.insert(DELTA_LOGP.to_string(), delta);
    }
    Ok(next)
}

/// The augmented components of `state` for [`AugmentedPfOde`]: Δ and the probes, if it
/// carries a likelihood (`None`: a plain sampling state).
pub fn augmented(state: &State) -> Option<(&Tensor, Option<&Tensor>)> {
    state
        .extras
        .get(DELTA_LOGP)
        .map(|delta| (delta, state.extras.get(PROBES)))
}

/// What [`Pipeline::variational_bound`](crate::Pipeline::variational_bound) returns: per row,
/// the continuous-time variational bound on the reverse SDE's negative log-likelihood
/// (Song, Durkan, Murray & Ermon 2021, Theorem 1), in nats.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The bound per row: `prior + integral`.
    pub value: Vec<f64>,
    /// Its standard error per row over the row's stratified time samples.
    pub se: Vec<f64>,
    /// E[−log π(x_T)] per row, in closed form for the SDE's Gaussian prior.
    pub prior: Vec<f64>,
    /// The time integral per row (its Monte Carlo estimate).
    pub integral: Vec<f64>,
    /// Time samples per row.
    pub samples: usize,
    /// Model evaluations (batched calls).
    pub nfe: u64,
}

/// What [`Pipeline::log_likelihood`](crate::Pipeline::log_likelihood) returns.
#[derive(Debug, Clone)]
pub struct Likelihood {
    /// log p_{t_ε}(x) per row, in nats (the mean over probes for Hutchinson).
    pub log_p: Vec<f64>,
    /// The prior's log-density at x(T) per row.
    pub prior: Vec<f64>,
    /// Δ(T) per row (mean over probes).
    pub delta: Vec<f64>,
    /// Hutchinson's standard error over the probes per row (`None`: exact trace, or k = 1).
    pub probe_se: Option<Vec<f64>>,
    /// x(T): the PF-ODE's encoding of each row (its latent).
    pub latent: Tensor,
    /// Model evaluations (batched calls).
    pub nfe: u64,
    /// An adaptive solve's cost per row (`None` on a grid).
    pub rows: Option<crate::RowStats>,
}
