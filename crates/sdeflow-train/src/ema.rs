//! Exponential moving averages of the weights: θ̄ ← β_n θ̄ + (1 − β_n) θ after step n.

use candle_core::Tensor;
use sdeflow_kernel::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::Params;

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

    fn validate(&self) -> Result<()> {
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
            } if !(samples > 0.0 && warmup_ratio >= 0.0) => bad(format!(
                "half-life {samples} must be > 0 and warm-up ratio {warmup_ratio} ≥ 0"
            )),
            _ => Ok(()),
        }
    }
}

/// One moving average of every variable, in name order.
#[derive(Debug, Clone)]
pub struct Ema {
    rate: EmaRate,
    shadow: Vec<Tensor>,
}

impl Ema {
    /// An average starting at the current weights.
    pub fn new(rate: EmaRate, params: &Params) -> Result<Self> {
        rate.validate()?;
        let shadow = params
            .vars()
            .iter()
            .map(|(_, v)| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { rate, shadow })
    }

    /// The rate schedule.
    pub fn rate(&self) -> EmaRate {
        self.rate
    }

    /// Folds the weights after step `n` in: θ̄ ← β_n θ̄ + (1 − β_n) θ.
    pub fn update(&mut self, params: &Params, n: u64, batch: usize) -> Result<()> {
        let beta = self.rate.beta(n, batch);
        for (avg, (_, var)) in self.shadow.iter_mut().zip(params.vars()) {
            *avg = avg
                .affine(beta, 0.0)?
                .add(&var.as_tensor().affine(1.0 - beta, 0.0)?)?;
        }
        Ok(())
    }

    /// The averaged weights, in name order.
    pub fn weights(&self) -> &[Tensor] {
        &self.shadow
    }

    /// Replaces the averaged weights (resuming from a checkpoint); shapes must match.
    pub fn set_weights(&mut self, weights: Vec<Tensor>) -> Result<()> {
        if weights.len() != self.shadow.len()
            || weights
                .iter()
                .zip(&self.shadow)
                .any(|(a, b)| a.dims() != b.dims())
        {
            return Err(Error::Shape(
                "EMA weights do not match the model's variables".into(),
            ));
        }
        self.shadow = weights;
        Ok(())
    }
}
