//! One training run's state and its step: data rows and DSM draws keyed by (seed, step, row),
//! the kernel's loss, gradients clipped by their global norm, an AdamW step at the schedule's
//! rate, the EMA folded in. Everything a step reads is a function of the seed, the step count
//! and the state (weights, moments, EMA), so a run restored from that state continues exactly.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::train::{LrSchedule, TrainSpec};
use sdeflow_kernel::{
    Denoiser, Dsm, Error, ForwardSde, Parameterization, Result, ScoreModel, Weighting,
    data::{Data, Split},
};

use crate::{
    AdamW, Ema, Params, clip_global_norm,
    parallel::{Reduce, Single},
};

/// Evaluation draws are the training stream's under this seed offset: apart from every
/// training step's, and the same at every evaluation.
const EVAL_SEED: u64 = 0x5eed_0e7a1;

/// What one step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The step just taken (1-based).
    pub step: u64,
    /// The batch's loss before the update.
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate used.
    pub lr: f64,
}

/// A training run in memory.
#[derive(Debug)]
pub struct Trainer {
    spec: TrainSpec,
    schedule: LrSchedule,
    seed: u64,
    dsm: Dsm,
    /// The model as training differentiates it (its outputs on autograd's graph).
    denoiser: Denoiser,
    /// The same model for evaluation: outputs detached, so no graph outlives a call.
    eval: Denoiser,
    data: Data,
    params: Params,
    opt: AdamW,
    emas: Vec<Ema>,
    dtype: DType,
    device: Device,
    /// How the ranks of a data-parallel run sum their gradients ([`Single`]: one process).
    reduce: Arc<dyn Reduce>,
}

impl Trainer {
    /// A run training `model` (in the target of `param`) on `data` with the DSM loss of `sde`
    /// under `weighting`, seeded by `seed`, in `dtype` on `device`.
    #[allow(
        clippy::too_many_arguments,
        reason = "a run is the model, its target, the loss's SDE and weighting, the data, the spec and where it runs"
    )]
    pub fn new(
        model: Arc<dyn ScoreModel>,
        param: Arc<dyn Parameterization>,
        sde: Arc<dyn ForwardSde>,
        weighting: Arc<dyn Weighting>,
        data: Data,
        spec: TrainSpec,
        seed: u64,
        (dtype, device): (DType, Device),
    ) -> Result<Self> {
        spec.validate()?;
        let vm = model
            .varmap()
            .ok_or_else(|| Error::Msg(format!("{model:?} has no trainable variables")))?;
        let params = Params::new(vm)?;
        match (model.classes(), data.source().classes()) {
            (Some(k), None) => {
                return Err(Error::Msg(format!(
                    "{model:?} is conditional on {k} classes, but the data has no labels; use a labelled source (digits(), idx(...)) or an unconditional model"
                )));
            }
            (Some(k), Some(m)) if k != m => {
                return Err(Error::Msg(format!(
                    "{model:?} is conditional on {k} classes, but the data has {m}; set the model's classes to {m}"
                )));
            }
            _ => {}
        }
        if spec.objective.needs_divergence() {
            if !model.second_order() {
                return Err(Error::invalid(
                    "train",
                    "objective",
                    format!(
                        "`{}()` differentiates ∇ₓ·ŝ, and {model:?} does not compute second-order gradients (ScoreModel::second_order); train it with `dsm()`",
                        spec.objective.name()
                    ),
                ));
            }
            if !sdeflow_kernel::likelihood::second_order_gradients()? {
                return Err(Error::invalid(
                    "train",
                    "objective",
                    format!(
                        "`{}()` differentiates ∇ₓ·ŝ, and candle detaches gradients unless CANDLE_GRAD_DO_NOT_DETACH=1 is set before the process starts (the sdeflow binary sets it)",
                        spec.objective.name()
                    ),
                ));
            }
        }
        let schedule = spec.schedule();
        let opt = AdamW::new(params.clone(), spec.optimizer)?;
        let emas = spec
            .ema
            .iter()
            .map(|&rate| Ema::new(rate, &params))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            schedule,
            seed,
            dsm: Dsm::new(sde, weighting).with_objective(spec.objective),
            eval: Denoiser::new(model.clone(), param.clone(), None, None),
            denoiser: Denoiser::new(model, param, None, None)
                .keep_graph(true)
                .training(true)
                .second_order(spec.objective.needs_divergence()),
            data,
            params,
            opt,
            emas,
            dtype,
            device,
            spec,
            reduce: Arc::new(Single),
        })
    }

    /// The run as one rank of a data-parallel group: each step takes this rank's slice of the
    /// batch, and `reduce` sums the ranks' losses and gradients ([`crate::parallel`]). Every
    /// rank must start from the same weights (the same seed, or the same checkpoint).
    pub fn with_reduce(mut self, reduce: Arc<dyn Reduce>) -> Result<Self> {
        if reduce.world() == 0 || reduce.world() > self.spec.batch {
            return Err(Error::invalid(
                "train",
                "batch",
                format!(
                    "{} rows per step cannot be split over {} ranks; use a batch of at least {}",
                    self.spec.batch,
                    reduce.world(),
                    reduce.world()
                ),
            ));
        }
        self.reduce = reduce;
        Ok(self)
    }

    /// Checks that every rank holds the same state (step count, weights, EMAs) before a
    /// data-parallel run steps: ranks that read different checkpoints, or none, would train
    /// apart without an error. One small all-reduce; nothing in one process.
    pub fn check_ranks_agree(&self) -> Result<()> {
        use sha2::Digest;
        let (rank, world) = (self.reduce.rank(), self.reduce.world());
        if world == 1 {
            return Ok(());
        }
        let mut hasher = sha2::Sha256::new();
        hasher.update(self.step_count().to_le_bytes());
        let mut tensors: Vec<&Tensor> = self
            .params
            .vars()
            .iter()
            .map(|(_, v)| v.as_tensor())
            .collect();
        for ema in &self.emas {
            tensors.extend(ema.weights());
        }
        for t in tensors {
            for v in t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()? {
                hasher.update(v.to_bits().to_le_bytes());
            }
        }
        // 16-bit pieces of the digest, and their squares: all ranks agree iff Σx² = (Σx)²/W.
        let pieces: Vec<f64> = hasher.finalize()[..8]
            .chunks(2)
            .map(|c| f64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        let mut wire = pieces.clone();
        wire.extend(pieces.iter().map(|p| p * p));
        let sum = self
            .reduce
            .all_reduce_sum(&Tensor::new(wire.as_slice(), &self.device)?)?
            .to_vec1::<f64>()?;
        let w = world as f64;
        if (0..pieces.len()).any(|i| sum[pieces.len() + i] * w != sum[i] * sum[i]) {
            return Err(Error::Msg(format!(
                "rank {rank} of {world}: the ranks start from different states (step {} here); every rank must start fresh or read the same checkpoint",
                self.step_count()
            )));
        }
        Ok(())
    }

    /// This run's rank and the world's size.
    pub fn rank(&self) -> (usize, usize) {
        (self.reduce.rank(), self.reduce.world())
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.opt.step_count()
    }

    /// The model's variables.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// How the run trains.
    pub fn spec(&self) -> &TrainSpec {
        &self.spec
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The device it trains on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The data it trains on.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// The EMAs, in the order of the spec's rates (the first is the one evaluated).
    pub fn emas(&self) -> &[Ema] {
        &self.emas
    }

    /// The EMAs, to restore them.
    pub fn emas_mut(&mut self) -> &mut [Ema] {
        &mut self.emas
    }

    /// Runs `f` with the model's variables set to `weights` (in name order: an EMA's), then
    /// puts the trained weights back exactly.
    pub fn with_weights<T>(&self, weights: &[Tensor], f: impl FnOnce() -> Result<T>) -> Result<T> {
        let vars = self.params.vars();
        if weights.len() != vars.len() {
            return Err(Error::Shape(format!(
                "{} weights for {} variables",
                weights.len(),
                vars.len()
            )));
        }
        let saved = vars
            .iter()
            .map(|(_, v)| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        for ((_, v), w) in vars.iter().zip(weights) {
            v.set(w)?;
        }
        let out = f();
        for ((_, v), w) in vars.iter().zip(&saved) {
            v.set(w)?;
        }
        out
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &AdamW {
        &self.opt
    }

    /// The optimizer, to save or restore its state.
    pub fn optimizer_mut(&mut self) -> &mut AdamW {
        &mut self.opt
    }

    /// The loss of `n` rows of `split` with the current weights (the held-out loss: the same
    /// rows and draws, keyed by `key`, at every evaluation of a run).
    pub fn loss_on(&self, split: Split, n: usize, key: u64) -> Result<f64> {
        self.loss_with(&self.eval, split, n, key)
    }

    /// [`loss_on`](Self::loss_on) for another denoiser (an exact model's loss on the same rows
    /// and draws: the irreducible part).
    pub fn loss_with(&self, denoiser: &Denoiser, split: Split, n: usize, key: u64) -> Result<f64> {
        let batch = self.data.batch(split, self.seed, 0, n)?;
        let (x0, labels) = batch.tensors(self.dtype, &self.device)?;
        let draws = self.dsm.draw(
            self.seed ^ EVAL_SEED,
            key,
            0,
            n,
            &batch.shape,
            self.dtype,
            &self.device,
        )?;
        let loss = self
            .dsm
            .loss(denoiser, &x0.detach(), labels.as_ref(), &draws)?;
        Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }

    /// One step: rows (n − 1)·B … n·B − 1 of the train split and the draws of step n, the
    /// loss, its gradient clipped, AdamW at lr(n), the EMAs. With `accumulate` = a the batch
    /// is taken as a micro-batches whose losses are weighted by their share of the rows, so
    /// the loss and gradient are the whole batch's. A non-finite loss or gradient is an error
    /// naming the step and the range of t in the batch, before anything is updated.
    ///
    /// One rank of W ([`with_reduce`](Self::with_reduce)) takes rows r·B/W … (r + 1)·B/W − 1
    /// of the batch (in its micro-batches), and the ranks' weighted losses and gradients are
    /// summed: the whole batch's, on every rank.
    ///
    /// Runs on a rayon worker ([`on_workers`](sdeflow_kernel::threads::on_workers)).
    pub fn step(&mut self) -> Result<StepReport> {
        sdeflow_kernel::threads::on_workers(|| self.step_here())
    }

    /// The ranks' gradients summed (this rank's `grads`, zeros when it had no rows), in one
    /// all-reduce of their concatenation: in f64 for an f64 model, f32 otherwise.
    fn sum_over_ranks(&self, grads: Option<Vec<Tensor>>) -> Result<Vec<Tensor>> {
        let vars = self.params.vars();
        let grads = match grads {
            Some(g) => g,
            None => vars
                .iter()
                .map(|(_, v)| v.as_tensor().zeros_like())
                .collect::<candle_core::Result<Vec<_>>>()?,
        };
        let wire = if self.dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let flat = grads
            .iter()
            .map(|g| g.flatten_all()?.to_dtype(wire))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let summed = self.reduce.all_reduce_sum(&Tensor::cat(&flat, 0)?)?;
        let mut at = 0;
        grads
            .iter()
            .map(|g| {
                let n = g.elem_count();
                let part = summed
                    .narrow(0, at, n)?
                    .reshape(g.shape())?
                    .to_dtype(g.dtype());
                at += n;
                Ok(part?)
            })
            .collect()
    }

    /// [`step`](Self::step) on the current thread.
    fn step_here(&mut self) -> Result<StepReport> {
        let n = self.opt.step_count() + 1;
        let b = self.spec.batch;
        let parts = self.spec.accumulate;
        let (rank, world) = (self.reduce.rank(), self.reduce.world());
        let (mine, mine_end) = (rank * b / world, (rank + 1) * b / world);
        let len = mine_end - mine;
        let mut value = 0.0;
        let mut grads: Option<Vec<Tensor>> = None;
        let mut times = Vec::with_capacity(len);
        // A non-finite part: the message naming its rows (every rank must reach the sum below
        // before any of them stops).
        let mut bad: Option<String> = None;
        for k in 0..parts {
            let (lo, hi) = (mine + k * len / parts, mine + (k + 1) * len / parts);
            if hi == lo {
                continue;
            }
            let batch = self.data.batch(
                Split::Train,
                self.seed,
                (n - 1) * b as u64 + lo as u64,
                hi - lo,
            )?;
            let (x0, labels) = batch.tensors(self.dtype, &self.device)?;
            let labels = match (labels, self.denoiser.model().classes()) {
                (Some(y), Some(classes)) => Some(Dsm::drop_labels(
                    &y,
                    classes,
                    self.spec.label_dropout,
                    (self.seed, n, lo as u64),
                )?),
                (y, _) => y,
            };
            let draws = self.dsm.draw(
                self.seed,
                n,
                lo as u64,
                hi - lo,
                &batch.shape,
                self.dtype,
                &self.device,
            )?;
            let batch_times: Vec<f64> = match &draws.time {
                sdeflow_kernel::PerRow::Rows(r) => r.values().iter().map(|c| c.t).collect(),
                sdeflow_kernel::PerRow::Call(c) => vec![c.t; hi - lo],
            };
            times.extend(&batch_times);
            let mut loss = self
                .dsm
                .loss(&self.denoiser, &x0, labels.as_ref(), &draws)?;
            if parts > 1 || world > 1 {
                loss = loss.affine((hi - lo) as f64 / b as f64, 0.0)?;
            }
            let part = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !part.is_finite() {
                // The rows that made it, by their index in the run's stream of training rows.
                let rows = self
                    .dsm
                    .row_losses(&self.denoiser, &x0, labels.as_ref(), &draws)?
                    .detach();
                let first = sdeflow_kernel::ops::non_finite_rows(
                    &rows.unsqueeze(1)?,
                    sdeflow_kernel::error::NON_FINITE_ROWS,
                )?;
                let at: Vec<String> = first
                    .iter()
                    .map(|&i| {
                        format!(
                            "row {} (t = {:.4e})",
                            (n - 1) * b as u64 + (lo + i) as u64,
                            batch_times[i]
                        )
                    })
                    .collect();
                let (t_lo, t_hi) = batch_times
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, z), &t| {
                        (a.min(t), z.max(t))
                    });
                bad = Some(format!(
                    "training step {n}: the loss is {part} (t in [{t_lo:.4e}, {t_hi:.4e}]), first in {}; the weights are left as they were",
                    if at.is_empty() {
                        "no single row (their mean overflows)".to_string()
                    } else {
                        at.join(", ")
                    }
                ));
                value = part;
                break;
            }
            value += part;
            let g = self.params.grads(&loss.backward()?)?;
            grads = Some(match grads {
                None => g,
                Some(acc) => acc
                    .iter()
                    .zip(&g)
                    .map(|(a, b)| a.add(b))
                    .collect::<candle_core::Result<Vec<_>>>()?,
            });
        }
        if world > 1 {
            // The batch's loss: every rank's part, summed (a NaN anywhere stops every rank).
            let sum = self
                .reduce
                .all_reduce_sum(&Tensor::new(&[value], &self.device)?)?;
            let total = sum.to_vec1::<f64>()?[0];
            if !total.is_finite() {
                return Err(Error::Msg(bad.unwrap_or_else(|| {
                    format!(
                        "training step {n}: the loss is {total} on another rank than {rank} of {world}; the weights are left as they were"
                    )
                })));
            }
            value = total;
            grads = Some(self.sum_over_ranks(grads)?);
        }
        if let Some(message) = bad {
            return Err(Error::Msg(message));
        }
        let t_range = || {
            let lo = times.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("t in [{lo:e}, {hi:e}]")
        };
        if !value.is_finite() {
            return Err(Error::Msg(format!(
                "training step {n}: the loss is {value} ({}); the weights are left as they were",
                t_range()
            )));
        }
        let mut grads = grads.unwrap_or_default();
        let grad_norm = match self.spec.clip {
            Some(c) => clip_global_norm(&self.params, &mut grads, c),
            None => clip_global_norm(&self.params, &mut grads, f64::INFINITY),
        }
        .map_err(|e| {
            Error::Msg(format!(
                "training step {n} ({}): {e}; the weights are left as they were",
                t_range()
            ))
        })?;
        let lr = self.schedule.lr(n, self.spec.steps);
        self.opt.step(&grads, lr)?;
        for ema in &mut self.emas {
            ema.update(&self.params, n, b)?;
        }
        Ok(StepReport {
            step: n,
            loss: value,
            grad_norm,
            lr,
        })
    }
}
