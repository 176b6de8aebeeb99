//! The `train: (...)` section of a config: how a run trains (MATH.md §9, "Optimiser and
//! EMA"). Plain serde types with their defaults and checks; `sdeflow-train` runs them.
//!
//! The defaults are one set chosen so the embedded default job learns the 8-mode ring in
//! under two minutes on two cores; where each comes from:
//! - AdamW (k-diffusion; PyTorch's β = (0.9, 0.999), ε = 1e-8, weight decay 0.01) rather than
//!   score_sde's Adam — the decay is decoupled, so it does not fight the adaptive step;
//! - a linear warm-up (score_sde: 5,000 steps at lr 2e-4 for images; a 2-D MLP needs far fewer
//!   at a higher rate), then a constant rate (score_sde, k-diffusion) or a cosine decay;
//! - clipping by the global gradient norm at 1.0 (score_sde);
//! - EMA with score_sde's warm-up β_n = min(β, (1 + n)/(10 + n)) (0.9999 there), or
//!   k-diffusion's 1 − (1 + n/γ)^(−p), or EDM's half-life in samples.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What follows the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// The peak rate to the end (score_sde, k-diffusion's default).
    Constant,
    /// Half a cosine from the peak down to `final_fraction` × peak at the run's last step
    /// (Loshchilov & Hutter 2017, without restarts).
    Cosine {
        /// The rate at the end, as a fraction of the peak, in [0, 1].
        final_fraction: f64,
    },
}

/// lr(n) for steps n = 1 … total: `peak` · n/warmup during the warm-up (score_sde's linear
/// warm-up), then the decay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename = "schedule", deny_unknown_fields)]
pub struct LrSchedule {
    /// The rate after the warm-up.
    pub peak: f64,
    /// Warm-up steps (0: none).
    pub warmup: u64,
    /// What follows.
    pub decay: Decay,
}

impl LrSchedule {
    /// Checks the schedule: a positive finite peak, a final fraction in [0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.peak > 0.0 && self.peak.is_finite()) {
            return Err(Error::invalid(
                "train",
                "lr",
                format!("{} is not a positive finite rate", self.peak),
            ));
        }
        if let Decay::Cosine { final_fraction } = self.decay
            && !(0.0..=1.0).contains(&final_fraction)
        {
            return Err(Error::invalid(
                "train",
                "decay",
                format!("final_fraction {final_fraction} is not in [0, 1]"),
            ));
        }
        Ok(())
    }

    /// The rate of step `n` (1-based) of a run of `total` steps.
    pub fn lr(&self, n: u64, total: u64) -> f64 {
        if n <= self.warmup {
            return self.peak * n as f64 / self.warmup as f64;
        }
        match self.decay {
            Decay::Constant => self.peak,
            Decay::Cosine { final_fraction } => {
                let span = total.saturating_sub(self.warmup).max(1) as f64;
                let progress = ((n - self.warmup) as f64 / span).min(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                self.peak * (final_fraction + (1.0 - final_fraction) * cos)
            }
        }
    }
}

/// AdamW's hyperparameters (the learning rate comes from the schedule, per step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename = "optimizer", deny_unknown_fields, default)]
pub struct AdamWParams {
    /// β₁, the first moment's decay.
    pub beta1: f64,
    /// β₂, the second moment's decay.
    pub beta2: f64,
    /// ε in the denominator.
    pub eps: f64,
    /// The decoupled weight decay (0: Adam).
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    /// PyTorch's `torch.optim.AdamW` defaults, which k-diffusion uses: β = (0.9, 0.999),
    /// ε = 1e-8, weight decay 0.01.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWParams {
    /// Checks β₁, β₂ ∈ [0, 1), ε > 0, weight decay ≥ 0.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, v: f64, valid: &str| {
            Err(Error::invalid(
                "adamw",
                field,
                format!("{v} is not {valid}"),
            ))
        };
        if !(0.0..1.0).contains(&self.beta1) {
            return bad("beta1", self.beta1, "in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("beta2", self.beta2, "in [0, 1)");
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return bad("eps", self.eps, "a positive finite number");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight_decay", self.weight_decay, "a finite number ≥ 0");
        }
        Ok(())
    }
}

/// How β_n depends on the step n = 1, 2, ….
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmaRate {
    /// score_sde: β_n = min(β, (1 + n)/(10 + n)), β = 0.9999 there (the warm-up keeps the early
    /// average from remembering the initial weights).
    Warmup {
        /// β.
        beta: f64,
    },
    /// k-diffusion's `EMAWarmup`: β_n = min(β_max, 1 − (1 + n/γ)^(−p)), γ = 1, p = 2/3 and
    /// β_max = 0.9999 by default.
    Power {
        /// γ > 0.
        gamma: f64,
        /// p > 0.
        power: f64,
        /// β_max.
        max: f64,
    },
    /// EDM: a half-life of h samples at b samples per step, β = 0.5^(b/h) (0.5 M images at
    /// batch 512 there), with k-diffusion's warm-up ratio r: h_n = min(h, r · n · b).
    HalfLife {
        /// h, in samples.
        samples: f64,
        /// r, the warm-up ratio (EDM: 0.05; 0 turns the warm-up off).
        warmup_ratio: f64,
    },
}

impl EmaRate {
    /// β_n after step n with `batch` samples per step.
    pub fn beta(&self, n: u64, batch: usize) -> f64 {
        let n = n as f64;
        match *self {
            EmaRate::Warmup { beta } => beta.min((1.0 + n) / (10.0 + n)),
            EmaRate::Power { gamma, power, max } => {
                max.min(1.0 - (1.0 + n / gamma).powf(-power)).max(0.0)
            }
            EmaRate::HalfLife {
                samples,
                warmup_ratio,
            } => {
                let h = if warmup_ratio > 0.0 {
                    samples.min(warmup_ratio * n * batch as f64)
                } else {
                    samples
                };
                0.5f64.powf(batch as f64 / h.max(f64::MIN_POSITIVE))
            }
        }
    }

    /// Checks the rate's parameters.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::invalid("train", "ema", what));
        match *self {
            EmaRate::Warmup { beta } if !(0.0..1.0).contains(&beta) => {
                bad(format!("beta {beta} is not in [0, 1)"))
            }
            EmaRate::Power { gamma, power, max }
                if !(gamma > 0.0 && power > 0.0 && (0.0..1.0).contains(&max)) =>
            {
                bad(format!(
                    "gamma {gamma} and power {power} must be > 0, max {max} in [0, 1)"
                ))
            }
            EmaRate::HalfLife {
                samples,
                warmup_ratio,
            } if !(samples > 0.0 && samples.is_finite() && warmup_ratio >= 0.0) => bad(format!(
                "half-life {samples} must be > 0 and warm-up ratio {warmup_ratio} ≥ 0"
            )),
            _ => Ok(()),
        }
    }
}

/// When and how a run evaluates itself, with the first EMA's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "eval", deny_unknown_fields, default)]
pub struct EvalSpec {
    /// Evaluate every this many steps (and after the last; 0: only after the last).
    pub every: u64,
    /// Held-out rows for the held-out loss (the same rows and draws at every evaluation).
    pub rows: usize,
    /// Fresh samples for sliced W2 against the exact law or the held-out data (0: none).
    pub samples: usize,
    /// Solver steps for those samples (`None`: the config's).
    pub steps: Option<usize>,
}

impl Default for EvalSpec {
    fn default() -> Self {
        Self {
            every: 1_000,
            rows: 4_096,
            samples: 2_000,
            steps: None,
        }
    }
}

/// When a run checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "checkpoint", deny_unknown_fields, default)]
pub struct CheckpointSpec {
    /// Checkpoint every this many steps (and after the last; 0: only after the last).
    pub every: u64,
    /// Checkpoints kept (the newest; at least 1).
    pub keep: usize,
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        Self {
            every: 1_000,
            keep: 2,
        }
    }
}

/// How a run trains: the `train:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "train", deny_unknown_fields, default)]
pub struct TrainSpec {
    /// The score-matching objective: `dsm()` (the default), `ism()` or
    /// `ssm(projections: 1, dist: rademacher, variance_reduced: true)` ([`crate::loss::Objective`]).
    pub objective: crate::loss::Objective,
    /// Optimizer steps.
    pub steps: u64,
    /// Rows per step.
    pub batch: usize,
    /// Micro-batches per step whose gradients are summed (the same rows, draws and loss as one
    /// batch of `batch` rows, in less memory).
    pub accumulate: usize,
    /// For a conditional model: the probability that a row's label is replaced by ∅, so that
    /// one network learns the conditional and the unconditional score (classifier-free
    /// guidance; Ho & Salimans 2022 train with 0.1 or 0.2).
    pub label_dropout: f64,
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
    /// The EMA rates, one average each; the first is the one evaluated, sampled and loaded.
    pub ema: Vec<EmaRate>,
    /// Write a `metrics.jsonl` line (and update the progress bar's loss) every this many
    /// steps.
    pub log_every: u64,
    /// Evaluation.
    pub eval: EvalSpec,
    /// Checkpoints.
    pub checkpoint: CheckpointSpec,
}

impl Default for TrainSpec {
    /// The default job's: 3,000 steps of 512 rows, AdamW at 2e-3 after 100 warm-up steps with
    /// a cosine decay to 5%, clipped at 1.0 (score_sde), EMA 0.999 with score_sde's warm-up;
    /// evaluated and checkpointed every 1,000 steps.
    fn default() -> Self {
        Self {
            objective: crate::loss::Objective::default(),
            steps: 3_000,
            batch: 512,
            accumulate: 1,
            label_dropout: 0.1,
            lr: 2e-3,
            warmup: 100,
            decay: Decay::Cosine {
                final_fraction: 0.05,
            },
            optimizer: AdamWParams::default(),
            clip: Some(1.0),
            ema: vec![EmaRate::Warmup { beta: 0.999 }],
            log_every: 10,
            eval: EvalSpec::default(),
            checkpoint: CheckpointSpec::default(),
        }
    }
}

impl TrainSpec {
    /// The learning-rate schedule.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            peak: self.lr,
            warmup: self.warmup,
            decay: self.decay,
        }
    }

    /// Checks every field, naming the first that is invalid and what would be valid.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::invalid("train", field, why));
        if self.steps == 0 {
            return bad("steps", "must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("batch", "must be at least 1".into());
        }
        if self.accumulate == 0 || self.accumulate > self.batch {
            return bad(
                "accumulate",
                format!(
                    "{} micro-batches cannot split a batch of {}; use 1 to {}",
                    self.accumulate, self.batch, self.batch
                ),
            );
        }
        if !(0.0..1.0).contains(&self.label_dropout) {
            return bad(
                "label_dropout",
                format!(
                    "{} is not a probability in [0, 1) (0: never drop a label)",
                    self.label_dropout
                ),
            );
        }
        if let Some(c) = self.clip
            && !(c > 0.0 && c.is_finite())
        {
            return bad("clip", format!("{c} is not a positive finite norm"));
        }
        if self.ema.is_empty() {
            return bad(
                "ema",
                "name at least one rate, e.g. `ema: [warmup(beta: 0.999)]`".into(),
            );
        }
        for rate in &self.ema {
            rate.validate()?;
        }
        if self.checkpoint.keep == 0 {
            return bad("keep", "keep at least 1 checkpoint".into());
        }
        if self.eval.steps == Some(0) {
            return bad("steps", "eval steps must be at least 1".into());
        }
        if self.eval.rows == 0 {
            return bad("rows", "eval rows must be at least 1".into());
        }
        self.optimizer.validate()?;
        self.objective.validate()?;
        self.schedule().validate()
    }
}
