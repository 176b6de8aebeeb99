//! The denoising score-matching loss (MATH.md §4, §9), one formula for training and for the
//! contracts that check it.
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
}

/// The denoising score-matching objective of an SDE under a weighting.
#[derive(Debug, Clone)]
pub struct Dsm {
    sde: Arc<dyn ForwardSde>,
    weighting: Arc<dyn Weighting>,
}

/// The uniform index of a row's time among its training draws.
const T_DRAW: u64 = 0;
/// The uniform index of a row's label-dropout draw among its training draws.
const LABEL_DRAW: u64 = 1;

impl Dsm {
    /// The objective of `sde` under `weighting`.
    pub fn new(sde: Arc<dyn ForwardSde>, weighting: Arc<dyn Weighting>) -> Self {
        Self { sde, weighting }
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
        Ok(Draws {
            time: PerRow::Rows(Rows::new(times)),
            eps: eps.reshape([vec![n], shape.to_vec()].concat())?,
            dropout: Some(RowKey {
                key: philox_step_key(seed, Stream::Dropout, step),
                first_row: offset,
            }),
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
