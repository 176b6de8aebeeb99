//! The denoiser: one model evaluation read as ε̂, x̂₀ or ŝ through the parameterization, with
//! the network's input preconditioned (c_in·x, c_noise), NFE counting and batch-invariant row
//! chunking; one time per call (sampling) or one per row (training).
//!
//! Its outputs are detached from autograd's graph unless [`Denoiser::keep_graph`] asks
//! otherwise: a model whose weights are `Var`s (every trainable one) returns tracked tensors,
//! and a sampler that kept them would hold every activation of every step alive through x.
//! That cost 80 MiB per NFE for the 3 × 256 MLP at batch 10,000 (9 GiB of RSS at 100 NFE),
//! and the fresh pages' faults tripled the time per step towards the end of a run.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use candle_core::Tensor;

use crate::{
    At, Conversions, Parameterization, Result, ScoreModel, Time, TimeCoefs, noise::RowKey,
};

/// The default chunk: the model always sees this many rows (the last chunk zero-padded), so a
/// sample's bits do not depend on its batch (DESIGN.md "pipeline").
pub const DEFAULT_CHUNK_ROWS: usize = 1024;

/// A model and the parameterization its output is read in (the model's target).
#[derive(Debug)]
pub struct Denoiser {
    model: Arc<dyn ScoreModel>,
    param: Arc<dyn Parameterization>,
    chunk_rows: Option<usize>,
    cond: Option<Tensor>,
    nfe: AtomicU64,
    row_evals: AtomicU64,
    padded_rows: AtomicU64,
    keep_graph: bool,
    training: bool,
    second_order: bool,
    guidance: Option<f64>,
}

impl Denoiser {
    /// A denoiser calling `model` in chunks of `chunk_rows` rows (`None`: whole batches).
    pub fn new(
        model: Arc<dyn ScoreModel>,
        param: Arc<dyn Parameterization>,
        chunk_rows: Option<usize>,
        cond: Option<Tensor>,
    ) -> Self {
        Self {
            model,
            param,
            chunk_rows,
            cond,
            nfe: AtomicU64::new(0),
            row_evals: AtomicU64::new(0),
            padded_rows: AtomicU64::new(0),
            keep_graph: false,
            training: false,
            second_order: false,
            guidance: None,
        }
    }

    /// A denoiser reading `model` through the target it fixes ([`ScoreModel::target`]); an
    /// error for a network, which learns the target a parameterization names ([`new`](Self::new)).
    pub fn of(
        model: Arc<dyn ScoreModel>,
        chunk_rows: Option<usize>,
        cond: Option<Tensor>,
    ) -> Result<Self> {
        let target = model.target().ok_or_else(|| {
            crate::Error::Msg(format!(
                "{model:?} learns its target: read it through a parameterization (Denoiser::new)"
            ))
        })?;
        Ok(Self::new(model, target.plugin, chunk_rows, cond))
    }

    /// Keeps the model's outputs on autograd's graph, for callers that differentiate through
    /// the model (a vector-Jacobian product for a likelihood's trace, say). Sampling does not.
    pub fn keep_graph(mut self, on: bool) -> Self {
        self.keep_graph = on;
        self
    }

    /// Whether the model's outputs stay on autograd's graph ([`keep_graph`](Self::keep_graph)).
    pub fn keeps_graph(&self) -> bool {
        self.keep_graph
    }

    /// Evaluates the model as in training: [`eval_keyed`](Self::eval_keyed)'s draws reach
    /// the model (its dropout). Off by default: evaluation, sampling and likelihoods see the
    /// network without dropout.
    pub fn training(mut self, on: bool) -> Self {
        self.training = on;
        self
    }

    /// Asks the model for outputs whose gradients with respect to x autograd can
    /// differentiate again ([`At::second_order`]): a loss of ∇ₓ·ŝ (implicit and sliced score
    /// matching) trains through it.
    pub fn second_order(mut self, on: bool) -> Self {
        self.second_order = on;
        self
    }

    /// Classifier-free guidance with scale w (MATH.md §9): every evaluation with labels is
    /// read as `ε̂ = (1 + w) ε̂(x, y) − w ε̂(x, ∅)`, two model calls (two NFE); w = 0 is the
    /// conditional model alone (one call). Rows of a batch without labels, and models without
    /// classes, are evaluated once, unguided. Combining in ε, with x and t shared, makes the
    /// guided prediction valid in every target and for every solver.
    pub fn guided(mut self, w: Option<f64>) -> Result<Self> {
        if let Some(w) = w
            && !w.is_finite()
        {
            return Err(crate::Error::invalid(
                "sample",
                "guidance",
                format!("{w} is not a finite scale"),
            ));
        }
        self.guidance = w;
        Ok(self)
    }

    /// Model evaluations so far (one per call of [`eval`](Self::eval), whatever the chunking;
    /// two for a guided one).
    pub fn nfe(&self) -> u64 {
        self.nfe.load(Ordering::Relaxed)
    }

    /// Rows evaluated, summed over every evaluation (padding excluded): a batch of n rows
    /// evaluated once counts n — each sample's NFE, summed.
    pub fn row_evals(&self) -> u64 {
        self.row_evals.load(Ordering::Relaxed)
    }

    /// Zero rows added by padding so far (the waste chunking costs).
    pub fn padded_rows(&self) -> u64 {
        self.padded_rows.load(Ordering::Relaxed)
    }

    /// The parameterization.
    pub fn param(&self) -> &dyn Parameterization {
        &*self.param
    }

    /// The model.
    pub fn model(&self) -> &dyn ScoreModel {
        &*self.model
    }

    /// Counts one model evaluation of `rows` rows made outside [`eval`](Self::eval) (a
    /// closed-form score and divergence, say).
    pub fn count_eval(&self, rows: usize) {
        self.row_evals.fetch_add(rows as u64, Ordering::Relaxed);
        self.nfe.fetch_add(1, Ordering::Relaxed);
    }

    /// [`eval_at`](Self::eval_at) with the output on autograd's graph whatever
    /// [`keep_graph`](Self::keep_graph) says (a vector-Jacobian product through the model).
    pub fn eval_tracked(&self, x: &Tensor, time: &Time) -> Result<Prediction<'_>> {
        self.evaluate(x, time, self.cond.as_ref(), true, None)
    }

    /// Evaluates the model at `(x, c)`, one time for every row: one NFE.
    pub fn eval(&self, x: &Tensor, c: &TimeCoefs) -> Result<Prediction<'_>> {
        self.eval_at(x, &Time::Call(*c))
    }

    /// Evaluates the model at `x` and `time`, per call or per row: one NFE.
    pub fn eval_at(&self, x: &Tensor, time: &Time) -> Result<Prediction<'_>> {
        self.eval_cond(x, time, self.cond.as_ref())
    }

    /// [`eval_at`](Self::eval_at) with this batch's conditioning `cond` (a training batch's
    /// labels) instead of the denoiser's own.
    pub fn eval_cond(
        &self,
        x: &Tensor,
        time: &Time,
        cond: Option<&Tensor>,
    ) -> Result<Prediction<'_>> {
        self.evaluate(x, time, cond, self.keep_graph, None)
    }

    /// [`eval_cond`](Self::eval_cond) with a training step's draws for the rows of `x`, which
    /// reach the model (its dropout) when the denoiser is [`training`](Self::training).
    pub fn eval_keyed(
        &self,
        x: &Tensor,
        time: &Time,
        cond: Option<&Tensor>,
        key: RowKey,
    ) -> Result<Prediction<'_>> {
        self.evaluate(x, time, cond, self.keep_graph, Some(key))
    }

    /// One counted evaluation (two when guided), its output on the graph when `keep`.
    fn evaluate(
        &self,
        x: &Tensor,
        time: &Time,
        cond: Option<&Tensor>,
        keep: bool,
        key: Option<RowKey>,
    ) -> Result<Prediction<'_>> {
        let n = x.dim(0)?;
        time.expect_rows(n, "the denoiser")?;
        if let Some(c) = cond {
            crate::ops::expect_rows(c, n, "the conditioning")?;
        }
        let key = key.filter(|_| self.training);
        let guide = match (self.guidance, cond, self.model.classes()) {
            (Some(w), Some(_), Some(classes)) if w != 0.0 => Some((w, classes)),
            _ => None,
        };
        let calls = if guide.is_some() { 2 } else { 1 };
        self.nfe.fetch_add(calls, Ordering::Relaxed);
        self.row_evals
            .fetch_add(calls * n as u64, Ordering::Relaxed);
        let mut out = self.forward_chunked(x, time, cond, keep, key)?;
        if let Some((w, classes)) = guide {
            let null = Tensor::full(crate::null_label(classes), n, x.device())?;
            let out_u = self.forward_chunked(x, time, Some(&null), keep, key)?;
            let param = &*self.param;
            let eps_c = param.to_eps(&out, x, time)?;
            let eps_u = param.to_eps(&out_u, x, time)?;
            let eps = crate::ops::lin2(1.0 + w, &eps_c, -w, &eps_u)?;
            out = param.from_eps(&eps, x, time)?;
        }
        Ok(Prediction {
            out,
            x: x.clone(),
            time: time.clone(),
            param: &*self.param,
        })
    }

    /// One model call on c_in·x with c_noise, detached unless the graph is kept: each chunk's
    /// activations are freed before the next chunk runs, so its buffers are reused warm.
    fn forward(
        &self,
        x: &Tensor,
        time: &Time,
        cond: Option<&Tensor>,
        keep: bool,
        key: Option<RowKey>,
    ) -> Result<Tensor> {
        let at = At::new(time.clone(), &*self.param)
            .with_dropout(key)
            .with_second_order(self.second_order);
        let out = self.model.forward(&self.param.input(x, time)?, &at, cond)?;
        Ok(if keep { out } else { out.detach() })
    }

    fn forward_chunked(
        &self,
        x: &Tensor,
        time: &Time,
        cond: Option<&Tensor>,
        keep: bool,
        key: Option<RowKey>,
    ) -> Result<Tensor> {
        let n = x.dim(0)?;
        let chunk = match self.chunk_rows {
            Some(chunk) if !self.model.rows_independent() => chunk,
            _ => return self.forward(x, time, cond, keep, key),
        };
        let mut outs = Vec::with_capacity(n.div_ceil(chunk));
        let mut start = 0;
        // An empty batch still makes one (fully padded) call: `cat` needs at least one part.
        while start < n || outs.is_empty() {
            let len = chunk.min(n - start);
            let part = x.narrow(0, start, len)?;
            let time_part = time.narrow(start, len)?;
            let cond_part = cond.map(|t| t.narrow(0, start, len)).transpose()?;
            let key_part = key.map(|k| k.skip(start));
            if len == chunk {
                outs.push(self.forward(&part, &time_part, cond_part.as_ref(), keep, key_part)?);
            } else {
                let pad = chunk - len;
                self.padded_rows.fetch_add(pad as u64, Ordering::Relaxed);
                let padded = pad_rows(&part, pad)?;
                let cond_padded = cond_part.map(|t| pad_rows(&t, pad)).transpose()?;
                outs.push(
                    self.forward(
                        &padded,
                        &time_part.padded(pad),
                        cond_padded.as_ref(),
                        keep,
                        key_part,
                    )?
                    .narrow(0, 0, len)?,
                );
            }
            start += len;
        }
        if outs.len() == 1 {
            return Ok(outs.pop().expect("one chunk"));
        }
        Ok(Tensor::cat(&outs, 0)?)
    }
}

fn pad_rows(x: &Tensor, pad: usize) -> Result<Tensor> {
    let mut shape = x.dims().to_vec();
    shape[0] = pad;
    let zeros = Tensor::zeros(shape, x.dtype(), x.device())?;
    Ok(Tensor::cat(&[x, &zeros], 0)?)
}

/// One model evaluation, read in any target.
#[derive(Debug, Clone)]
pub struct Prediction<'a> {
    out: Tensor,
    x: Tensor,
    time: Time,
    param: &'a dyn Parameterization,
}

impl Prediction<'_> {
    /// The raw model output.
    pub fn output(&self) -> &Tensor {
        &self.out
    }
    /// ε̂.
    pub fn eps(&self) -> Result<Tensor> {
        self.param.to_eps(&self.out, &self.x, &self.time)
    }
    /// x̂₀.
    pub fn x0(&self) -> Result<Tensor> {
        self.param.to_x0(&self.out, &self.x, &self.time)
    }
    /// ŝ.
    pub fn score(&self) -> Result<Tensor> {
        self.param.to_score(&self.out, &self.x, &self.time)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;

    #[test]
    fn pad_rows_appends_zero_rows_of_the_same_shape() -> Result<()> {
        let x = Tensor::ones((3, 2, 2), DType::F32, &Device::Cpu)?;
        let padded = pad_rows(&x, 2)?;
        assert_eq!(padded.dims(), &[5, 2, 2]);
        assert_eq!(padded.dtype(), DType::F32);
        let v = padded.flatten_all()?.to_vec1::<f32>()?;
        assert!(v[..12].iter().all(|&a| a == 1.0));
        assert!(v[12..].iter().all(|&a| a == 0.0));
        Ok(())
    }
}
