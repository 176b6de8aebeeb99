//! The learning rate per step: a linear warm-up, then constant or cosine decay.

use sdeflow_kernel::{Error, Result};
use serde::{Deserialize, Serialize};

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
#[serde(deny_unknown_fields)]
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
