//! Exponential moving averages of the weights: θ̄ ← β_n θ̄ + (1 − β_n) θ after step n.

use candle_core::Tensor;
use sdeflow_kernel::{Error, Result};

use crate::inplace::{self, Update};
use crate::{EmaRate, Params};

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
        // Off autograd's graph: the weights are variables, and an average computed from them
        // would hold every earlier average (and its step's tensors) alive through its graph.
        for (avg, (_, var)) in self.shadow.iter_mut().zip(params.vars()) {
            let theta = var.as_tensor();
            if inplace::fits(&[avg, theta]) && !avg.track_op() {
                avg.inplace_op2(theta, &Update::Lerp { beta })?;
                continue;
            }
            *avg = avg
                .detach()
                .affine(beta, 0.0)?
                .add(&var.as_tensor().detach().affine(1.0 - beta, 0.0)?)?;
        }
        Ok(())
    }

    /// The averaged weights, in name order (updated in place by the next step: copy what must
    /// outlive it).
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
        // Copies of their own: the averages are updated in place.
        self.shadow = weights
            .iter()
            .map(Tensor::copy)
            .collect::<candle_core::Result<_>>()?;
        Ok(())
    }
}
