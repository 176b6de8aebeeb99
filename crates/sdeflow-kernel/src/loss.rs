//! The score-matching losses (MATH.md §4, §9), one formula each for training and for the
//! contracts that check them: denoising score matching below, and implicit and sliced score
//! matching ([`Objective`]) through the likelihood's divergence machinery.
//!
//! For clean rows x₀, each row i gets its own time t_i drawn from the weighting's t-density
//! (uniform on [t_ε, T] unless the weighting has its own) and its own ε_i ~ N(0, I), both from
//! the kernel's noise source keyed by (seed, step, row), so a row's draws do not depend on its
//! batch, the batch split or the shard. Then x_t = α x₀ + σ ε and
//!
//! L = mean_i w_ε(t_i) ‖ε̂_i − ε_i‖² = mean_i (w_ε(t_i)/k(t_i)²) ‖out_i − target_i‖²,
//!
//! evaluated in the model's own target with its exact factor k (‖out − target‖ = k ‖ε̂ − ε‖ at
//! a fixed x, MATH.md §4), so every parameterization minimises the same objective. The
//! t-density is part of the objective — t is drawn from it and the loss carries w_ε alone —
//! which is EDM's and k-diffusion's loss (their effective weight is λ(σ)·p(σ)); dividing by
//! p(t) instead would turn `weighting: edm()` into a t-uniform loss with weights up to ~4e9 at
//! σ̃ = 80.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{
    Conversions, Denoiser, ForwardSde, PerRow, Result, Rows, Time, TimeCoefs, Weighting, convert,
    noise::{RowKey, Stream, philox_normal_tensor, philox_step_key, uniform_f64},
};

/// The draws of one batch: each row's time and noise.
#[derive(Debug, Clone)]
pub struct Draws {
    /// One time per row.
    pub time: Time,
    /// ε, shaped like the batch.
    pub eps: Tensor,
    /// The step's draws for a network's dropout, keyed by the batch's first row (`None`: no
    /// dropout, as in a loss evaluated at fixed draws).
    pub dropout: Option<RowKey>,
    /// Sliced score matching's projections, `[n, k, ...]` (`None` for the other objectives).
    pub probes: Option<Tensor>,
}

/// Which score-matching objective a run minimises (`train: (objective: …)`), each at every
/// row's own noise level x_t = α x₀ + σ ε and weighted in time by the run's weighting.
///
/// - `dsm()` (the default; Vincent 2011): w_ε ‖ε̂ − ε‖², as above.
/// - `ism()`, implicit score matching (Hyvärinen 2005): J = ½‖ŝ‖² + ∇·ŝ, the divergence exact
///   (D vector-Jacobian products: for small D).
/// - `ssm(projections: k, dist, variance_reduced)`, sliced score matching (Song, Garg, Shi &
///   Ermon 2019): J = ½ (vᵀŝ)² + vᵀ (∂ŝ/∂x) v averaged over k projections v per row
///   (Rademacher or Gaussian, from the kernel's noise source keyed by (seed, step, row)); with
///   `variance_reduced` (SSM-VR) the first term is ½‖ŝ‖², its expectation over v.
///
/// ISM and SSM are weighted as 2 w_ε σ² J, which makes them DSM's objective less a constant:
/// E_ε‖ŝ − (−ε/σ)‖² = E[‖ŝ‖² + 2 ∇·ŝ] + d/σ² (integration by parts; MATH.md §9's
/// E‖ε̂* − ε‖² = d + σ² E[∇·s]), so L_ISM = L_DSM − d E_t[w_ε] for every model, and all three
/// have the same minimiser. On the exact score E[J] = −½ E‖s‖² (E‖s‖² = −E[∇·s]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Objective {
    /// Denoising score matching.
    Dsm {},
    /// Implicit score matching, the divergence exact.
    Ism {},
    /// Sliced score matching.
    Ssm {
        /// Projections per row, k ≥ 1 (default 1).
        #[serde(default = "one")]
        projections: usize,
        /// Their distribution (default Rademacher).
        #[serde(default = "rademacher")]
        dist: crate::likelihood::Probe,
        /// SSM-VR: ½‖ŝ‖² for ½ (vᵀŝ)² (default true).
        #[serde(default = "yes")]
        variance_reduced: bool,
    },
}

fn one() -> usize {
    1
}

fn rademacher() -> crate::likelihood::Probe {
    crate::likelihood::Probe::Rademacher
}

fn yes() -> bool {
    true
}

impl Default for Objective {
    fn default() -> Self {
        Self::Dsm {}
    }
}

impl Objective {
    /// Whether the objective differentiates ∇ₓ·ŝ (ISM, SSM): second-order gradients.
    pub fn needs_divergence(&self) -> bool {
        !matches!(self, Self::Dsm {})
    }

    /// Its name as a config writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dsm {} => "dsm",
            Self::Ism {} => "ism",
            Self::Ssm { .. } => "ssm",
        }
    }

    /// Checks the objective's fields.
    pub fn validate(&self) -> Result<()> {
        if let Self::Ssm { projections: 0, .. } = self {
            return Err(crate::Error::invalid(
                "train",
                "objective",
                "ssm needs at least 1 projection per row (`ssm(projections: 1)`)",
            ));
        }
        Ok(())
    }
}

/// The score-matching loss of an SDE under a weighting: denoising score matching by default,
/// or another [`Objective`].
#[derive(Debug, Clone)]
pub struct Dsm {
    sde: Arc<dyn ForwardSde>,
    weighting: Arc<dyn Weighting>,
    objective: Objective,
}

/// The uniform index of a row's time among its training draws.
const T_DRAW: u64 = 0;
/// The uniform index of a row's label-dropout draw among its training draws.
const LABEL_DRAW: u64 = 1;

impl Dsm {
    /// The objective of `sde` under `weighting`.
    pub fn new(sde: Arc<dyn ForwardSde>, weighting: Arc<dyn Weighting>) -> Self {
        Self {
            sde,
            weighting,
            objective: Objective::default(),
        }
    }

    /// The same SDE and weighting with another objective.
    pub fn with_objective(mut self, objective: Objective) -> Self {
        self.objective = objective;
        self
    }

    /// The objective.
    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// The SDE.
    pub fn sde(&self) -> &dyn ForwardSde {
        &*self.sde
    }

    /// The weighting.
    pub fn weighting(&self) -> &dyn Weighting {
        &*self.weighting
    }

    /// The time whose CDF under the loss's t-density is `u` ∈ (0, 1): the weighting's inverse
    /// CDF, or t_ε + u (T − t_ε).
    pub fn t_at(&self, u: f64) -> f64 {
        let (a, b) = (self.sde.t_eps(), self.sde.t_max());
        self.weighting
            .sample_t(&*self.sde, u)
            .unwrap_or(a + u * (b - a))
    }

    /// The loss's t-density p(t) on [t_ε, T]: the weighting's, or 1/(T − t_ε).
    pub fn t_density(&self, c: &TimeCoefs) -> f64 {
        self.weighting
            .t_density(&*self.sde, c)
            .unwrap_or_else(|| 1.0 / (self.sde.t_max() - self.sde.t_eps()))
    }

    /// The draws of rows `offset..offset + n` at training step `step` for samples of `shape`
    /// (without the batch dimension): row r's time from uniform 0 of (seed, step, r), its ε
    /// from normals 0.. of the same key — the same bits for any batch split.
    #[allow(
        clippy::too_many_arguments,
        reason = "a draw is keyed by seed, step and rows, shaped, typed and placed"
    )]
    pub fn draw(
        &self,
        seed: u64,
        step: u64,
        offset: u64,
        n: usize,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Draws> {
        let key = philox_step_key(seed, Stream::Training, step);
        let times: Vec<TimeCoefs> = (0..n as u64)
            .map(|i| {
                self.sde
                    .coefs(self.t_at(uniform_f64(key, offset + i, T_DRAW)))
            })
            .collect();
        let cols: usize = shape.iter().product();
        let eps = philox_normal_tensor(key, offset, n, cols, 0, dtype, device)?;
        let probes = match self.objective {
            Objective::Ssm {
                projections, dist, ..
            } => Some(crate::likelihood::probes_keyed(
                philox_step_key(seed, Stream::Projection, step),
                offset,
                n,
                shape,
                projections,
                dist,
                (dtype, device),
            )?),
            _ => None,
        };
        Ok(Draws {
            time: PerRow::Rows(Rows::new(times)),
            eps: eps.reshape([vec![n], shape.to_vec()].concat())?,
            dropout: Some(RowKey {
                key: philox_step_key(seed, Stream::Dropout, step),
                first_row: offset,
            }),
            probes,
        })
    }

    /// Classifier-free guidance's label dropout (Ho & Salimans 2022): the labels of rows
    /// `offset..offset + n` at training step `step`, each replaced by ∅
    /// ([`crate::null_label`]`(classes)`) with probability `p`, decided by the row's uniform 1
    /// of (seed, step, row) on the training stream — the same in any batch split.
    pub fn drop_labels(
        labels: &Tensor,
        classes: usize,
        p: f64,
        (seed, step, offset): (u64, u64, u64),
    ) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(labels.clone());
        }
        let key = philox_step_key(seed, Stream::Training, step);
        let null = crate::null_label(classes);
        let kept: Vec<u32> = labels
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?
            .into_iter()
            .enumerate()
            .map(|(i, y)| {
                if uniform_f64(key, offset + i as u64, LABEL_DRAW) < p {
                    null
                } else {
                    y
                }
            })
            .collect();
        Ok(Tensor::from_vec(kept, labels.dim(0)?, labels.device())?)
    }

    /// The same noise with every row at time `t`, as one time per call (the loss at one
    /// time, which the contracts compare with its closed form and with per-row evaluation).
    pub fn at_time(&self, draws: &Draws, t: f64) -> Draws {
        Draws {
            time: PerRow::Call(self.sde.coefs(t)),
            eps: draws.eps.clone(),
            dropout: draws.dropout,
            probes: draws.probes.clone(),
        }
    }

    /// Each row's loss w_ε(t_i) ‖ε̂_i − ε_i‖², shape [n], computed in the target of
    /// `denoiser`'s parameterization with the exact factor; on autograd's graph when the
    /// denoiser keeps it. `cond` holds the rows' labels for a conditional model.
    pub fn row_losses(
        &self,
        denoiser: &Denoiser,
        x0: &Tensor,
        cond: Option<&Tensor>,
        draws: &Draws,
    ) -> Result<Tensor> {
        if self.objective.needs_divergence() {
            // 2 w_ε σ² J: DSM's objective less d w_ε (see [`Objective`]).
            let j = self.row_objectives(denoiser, x0, cond, draws)?;
            return crate::param::scale(
                &draws.time,
                |c| 2.0 * self.weighting.eps_weight(c) * c.sigma * c.sigma,
                &j,
            );
        }
        let time = &draws.time;
        let x = convert::noisy(x0, &draws.eps, time)?;
        let out = match draws.dropout {
            Some(key) => denoiser.eval_keyed(&x, time, cond, key)?,
            None => denoiser.eval_cond(&x, time, cond)?,
        }
        .output()
        .clone();
        let param = denoiser.param();
        let target = param.target_of(x0, &draws.eps, time)?;
        let n = x0.dim(0)?;
        let sq = (out - target)?.sqr()?.reshape((n, ()))?.sum(1)?;
        crate::param::scale(
            time,
            |c| {
                let k = param.eps_loss_scale(c);
                self.weighting.eps_weight(c) / (k * k)
            },
            &sq,
        )
    }

    /// Each row's implicit or sliced score-matching term J, unweighted, shape `[n]`: ISM's
    /// ½‖ŝ‖² + ∇·ŝ, or SSM's ½ (vᵀŝ)² + vᵀ (∂ŝ/∂x) v averaged over the row's projections
    /// (SSM-VR: ½‖ŝ‖² + …) at x_t = α x₀ + σ ε. ŝ and the divergence are the likelihood's
    /// ([`crate::likelihood::score_divergence`]: the model's closed form when it has one);
    /// on autograd's graph when the denoiser keeps it ([`score_divergence_on_graph`](crate::likelihood::score_divergence_on_graph)),
    /// for a training step. DSM has no such term: an error.
    pub fn row_objectives(
        &self,
        denoiser: &Denoiser,
        x0: &Tensor,
        cond: Option<&Tensor>,
        draws: &Draws,
    ) -> Result<Tensor> {
        let time = &draws.time;
        let x = convert::noisy(x0, &draws.eps, time)?;
        let n = x0.dim(0)?;
        let probes = match self.objective {
            Objective::Dsm {} => {
                return Err(crate::Error::Msg(
                    "denoising score matching has no implicit term; use row_losses".into(),
                ));
            }
            Objective::Ism {} => None,
            Objective::Ssm { .. } => Some(draws.probes.as_ref().ok_or_else(|| {
                crate::Error::Msg("sliced score matching's draws hold no projections".into())
            })?),
        };
        let (s, div) = if denoiser.keeps_graph() {
            crate::likelihood::score_divergence_on_graph(
                denoiser,
                &x,
                time,
                probes,
                (cond, draws.dropout),
            )?
        } else if cond.is_some() {
            let (s, div) = crate::likelihood::score_divergence_on_graph(
                denoiser,
                &x,
                time,
                probes,
                (cond, None),
            )?;
            (s.detach(), div.detach())
        } else {
            crate::likelihood::score_divergence(denoiser, &x, time, probes)?
        };
        let flat = s.reshape((n, ()))?;
        let (first, div) = match (self.objective, probes) {
            (
                Objective::Ssm {
                    variance_reduced: false,
                    projections,
                    ..
                },
                Some(v),
            ) => {
                let v = v.reshape((n, projections, ()))?.to_dtype(flat.dtype())?;
                let vs = v.broadcast_mul(&flat.unsqueeze(1)?)?.sum(2)?;
                (vs.sqr()?.mean(1)?, div.mean(1)?)
            }
            (_, Some(_)) => (flat.sqr()?.sum(1)?, div.mean(1)?),
            (_, None) => (flat.sqr()?.sum(1)?, div),
        };
        Ok((first.affine(0.5, 0.0)? + div.to_dtype(first.dtype())?)?)
    }

    /// The loss L = mean of [`row_losses`](Self::row_losses): the scalar a training step
    /// differentiates.
    pub fn loss(
        &self,
        denoiser: &Denoiser,
        x0: &Tensor,
        cond: Option<&Tensor>,
        draws: &Draws,
    ) -> Result<Tensor> {
        Ok(self.row_losses(denoiser, x0, cond, draws)?.mean_all()?)
    }
}
