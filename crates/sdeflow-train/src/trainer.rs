//! One training run's state and its step: data rows and DSM draws keyed by (seed, step, row),
//! the kernel's loss, gradients clipped by their global norm, an AdamW step at the schedule's
//! rate, the EMA folded in. Everything a step reads is a function of the seed, the step count
//! and the state (weights, moments, EMA), so a run restored from that state continues exactly.

use std::sync::Arc;

use candle_core::{DType, Device};
use sdeflow_kernel::{
    Denoiser, Dsm, Error, ForwardSde, Parameterization, Result, ScoreModel, Weighting,
    data::{Data, Split},
};
use serde::{Deserialize, Serialize};

use crate::{AdamW, AdamWParams, Decay, Ema, EmaRate, LrSchedule, Params, clip_global_norm};

/// Evaluation draws are the training stream's under this seed offset: apart from every
/// training step's, and the same at every evaluation.
const EVAL_SEED: u64 = 0x5eed_0e7a1;

/// How a run trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    /// Optimizer steps.
    pub steps: u64,
    /// Rows per step.
    pub batch: usize,
    /// The peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// What follows the warm-up.
    pub decay: Decay,
    /// AdamW's β₁, β₂, ε and weight decay.
    pub optimizer: AdamWParams,
    /// The global gradient norm bound (`None`: no clipping).
    pub clip: Option<f64>,
    /// The EMA's rate schedule.
    pub ema: EmaRate,
}

impl Default for TrainSpec {
    /// AdamW at 1e-3 after 100 warm-up steps, clipped at 1.0 (score_sde), EMA 0.999 with
    /// score_sde's warm-up.
    fn default() -> Self {
        Self {
            steps: 2_000,
            batch: 512,
            lr: 1e-3,
            warmup: 100,
            decay: Decay::Constant,
            optimizer: AdamWParams::default(),
            clip: Some(1.0),
            ema: EmaRate::Warmup { beta: 0.999 },
        }
    }
}

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
    ema: Ema,
    dtype: DType,
    device: Device,
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
        if spec.steps == 0 || spec.batch == 0 {
            return Err(Error::invalid(
                "train",
                "steps",
                "steps and batch must be at least 1",
            ));
        }
        if let Some(c) = spec.clip
            && !(c > 0.0 && c.is_finite())
        {
            return Err(Error::invalid(
                "train",
                "clip",
                format!("{c} is not a positive finite norm"),
            ));
        }
        let vm = model
            .varmap()
            .ok_or_else(|| Error::Msg(format!("{model:?} has no trainable variables")))?;
        let params = Params::new(vm)?;
        let schedule = LrSchedule {
            peak: spec.lr,
            warmup: spec.warmup,
            decay: spec.decay,
        };
        schedule.validate()?;
        let opt = AdamW::new(params.clone(), spec.optimizer)?;
        let ema = Ema::new(spec.ema, &params)?;
        Ok(Self {
            schedule,
            seed,
            dsm: Dsm::new(sde, weighting),
            eval: Denoiser::new(model.clone(), param.clone(), None, None),
            denoiser: Denoiser::new(model, param, None, None).keep_graph(true),
            data,
            params,
            opt,
            ema,
            dtype,
            device,
            spec,
        })
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.opt.step_count()
    }

    /// The model's variables.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The EMA.
    pub fn ema(&self) -> &Ema {
        &self.ema
    }

    /// The EMA, to restore it.
    pub fn ema_mut(&mut self) -> &mut Ema {
        &mut self.ema
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
    /// loss, its gradient clipped, AdamW at lr(n), the EMA. A non-finite loss or gradient is
    /// an error naming the step and the range of t in the batch, before anything is updated.
    pub fn step(&mut self) -> Result<StepReport> {
        let n = self.opt.step_count() + 1;
        let b = self.spec.batch;
        let batch = self
            .data
            .batch(Split::Train, self.seed, (n - 1) * b as u64, b)?;
        let (x0, labels) = batch.tensors(self.dtype, &self.device)?;
        let draws = self
            .dsm
            .draw(self.seed, n, 0, b, &batch.shape, self.dtype, &self.device)?;
        let loss = self
            .dsm
            .loss(&self.denoiser, &x0, labels.as_ref(), &draws)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let t_range = || {
            let ts: Vec<f64> = match &draws.time {
                sdeflow_kernel::PerRow::Rows(r) => r.values().iter().map(|c| c.t).collect(),
                sdeflow_kernel::PerRow::Call(c) => vec![c.t],
            };
            let lo = ts.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("t in [{lo:e}, {hi:e}]")
        };
        if !value.is_finite() {
            return Err(Error::Msg(format!(
                "training step {n}: the loss is {value} ({}); the weights are left as they were",
                t_range()
            )));
        }
        let mut grads = self.params.grads(&loss.backward()?)?;
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
        self.ema.update(&self.params, n, b)?;
        Ok(StepReport {
            step: n,
            loss: value,
            grad_norm,
            lr,
        })
    }
}
