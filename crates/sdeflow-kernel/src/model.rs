//! The [`ScoreModel`] trait: the network, or an exact oracle.

use std::{fmt::Debug, path::Path, sync::Arc};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::{
    Conversions, Entry, Parameterization, PerRow, Result, Time, data::Data, registry::ParamKind,
};

/// What a score model is built with: where and in what precision it runs, and the data of
/// the config it is built in (an oracle reads its exact law: a config names a mixture once).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ModelContext {
    /// The device.
    pub device: Device,
    /// The floating-point type of inputs and outputs.
    pub dtype: DType,
    /// The config's data, if it names one.
    pub data: Option<Data>,
}

impl ModelContext {
    /// A model on `device` in `dtype`, with no data.
    pub fn new(device: Device, dtype: DType) -> Self {
        Self {
            device,
            dtype,
            data: None,
        }
    }

    /// This context with `data`.
    pub fn with_data(mut self, data: Data) -> Self {
        self.data = Some(data);
        self
    }
}

/// A parameterization with the name it is registered under: what a model predicts.
pub type ParamEntry = Entry<ParamKind>;

/// Where a model is evaluated: the time of the call or of each row (the SDE's coefficients),
/// and the noise-level input c_noise the parameterization gives a network (MATH.md §9).
#[derive(Debug, Clone, PartialEq)]
pub struct At {
    /// The time coefficients, per call or per row.
    pub time: Time,
    /// c_noise, per call or per row.
    pub c_noise: PerRow<f64>,
    /// The draws of a training step, for a network's dropout ([`crate::noise::RowKey::dropout`]);
    /// `None` everywhere else (evaluation, sampling, likelihoods): dropout is off.
    pub dropout: Option<crate::noise::RowKey>,
    /// The caller differentiates a gradient of this output again (implicit and sliced score
    /// matching differentiate ∇ₓ·ŝ with respect to the weights): the model must compute with
    /// ops whose backward autograd can itself differentiate (candle's), not a fused op with a
    /// hand-written backward ([`ScoreModel::second_order`]).
    pub second_order: bool,
}

impl At {
    /// The one time of a per-call evaluation, or an error naming `model` for per-row times (for
    /// models that only take one time per call, such as test fixtures).
    pub fn call(&self, model: &str) -> Result<&crate::TimeCoefs> {
        match &self.time {
            PerRow::Call(c) => Ok(c),
            PerRow::Rows(_) => Err(crate::Error::Msg(format!(
                "{model} takes one time per call, not one per row"
            ))),
        }
    }

    /// `time` with the noise-level input `param` gives the network.
    pub fn new(time: Time, param: &dyn Parameterization) -> Self {
        Self {
            c_noise: param.noise_level(&time),
            time,
            dropout: None,
            second_order: false,
        }
    }

    /// This evaluation with a training step's dropout draws.
    pub fn with_dropout(mut self, key: Option<crate::noise::RowKey>) -> Self {
        self.dropout = key;
        self
    }

    /// This evaluation for a caller that differentiates its gradient again
    /// ([`second_order`](Self::second_order)).
    pub fn with_second_order(mut self, on: bool) -> Self {
        self.second_order = on;
        self
    }
}

/// The label that stands for "no label" (∅) in a conditional model's `cond`: `classes` itself,
/// one past the last class. Classifier-free guidance evaluates a model at it, and training
/// drops labels to it.
pub fn null_label(classes: usize) -> u32 {
    u32::try_from(classes).unwrap_or(u32::MAX)
}

/// A model of the score, evaluated in row batches `x: [n, ...]` at one time per call or one
/// per row.
///
/// A model predicts in its own target: an exact model fixes it ([`target`](Self::target): the
/// oracle predicts the score), a network learns the one the pipeline's parameterization names.
/// Either way the [`Denoiser`](crate::Denoiser) reads the output through that one
/// parameterization, which also preconditions what the network sees (c_in·x and c_noise).
pub trait ScoreModel: Send + Sync + Debug {
    /// The shape of one sample, without the batch dimension.
    fn sample_shape(&self) -> Vec<usize>;

    /// The model output at the network input `x` (c_in·x_t) and `at`, in the model's target.
    /// `cond` is optional conditioning: class labels, `[n]` u32, one per row of `x`, each in
    /// 0 … classes − 1 or [`null_label`] (∅: unconditional). A conditional model treats
    /// `None` as ∅ for every row; an unconditional one ignores `cond`.
    fn forward(&self, x: &Tensor, at: &At, cond: Option<&Tensor>) -> Result<Tensor>;

    /// The bytes one row holds while the model evaluates it (activations, and for training
    /// what the backward pass keeps), for the run's [memory estimate](crate::resources).
    /// The default, 64 values of `dtype` per input value, suits small networks; a large
    /// one says more.
    fn activation_bytes_per_row(&self, dtype: candle_core::DType) -> u64 {
        let cols: usize = self.sample_shape().iter().product();
        64 * cols as u64 * dtype.size_in_bytes() as u64
    }

    /// The number of classes a conditional model takes in `cond` (its label ∅ is
    /// [`null_label`]`(classes)`); `None` (the default): unconditional.
    fn classes(&self) -> Option<usize> {
        None
    }

    /// The target this model predicts in when the model fixes it (an exact model, a network
    /// loaded with what it was trained on); `None` for a network that learns the target the
    /// pipeline's parameterization names.
    fn target(&self) -> Option<ParamEntry> {
        None
    }

    /// Whether row i of the output depends on row i of the input alone, bit for bit, at any
    /// batch size. The pipeline then skips zero-padded chunking. Networks built on matmul
    /// are not (candle's and cuBLAS's kernels change with the batch), so the default is no.
    fn rows_independent(&self) -> bool {
        false
    }

    /// The exact law p₀ when the model is an oracle (for metrics against truth).
    fn exact_law(&self) -> Option<&crate::mixture::GaussianMixture> {
        None
    }

    /// Whether the model honours [`At::second_order`]: its output's gradients with respect to
    /// x are themselves on autograd's graph (with `CANDLE_GRAD_DO_NOT_DETACH=1`), so that a
    /// loss of ∇ₓ·ŝ (implicit or sliced score matching) trains it. The default is no: a
    /// model that does not say so is refused such a loss rather than trained on a gradient
    /// that silently lacks its second-order terms.
    fn second_order(&self) -> bool {
        false
    }

    /// The trainable variables, if any.
    fn varmap(&self) -> Option<&VarMap> {
        None
    }

    /// The same model with its weights off autograd's graph, sharing their storage (so a load
    /// into the original shows in it): a likelihood differentiates with respect to the input
    /// only, and backward passes through tracked weights would compute their gradients too.
    /// `None` (the default): a model without trainable weights, evaluated as it is.
    fn frozen(&self) -> Option<Arc<dyn ScoreModel>> {
        None
    }

    /// For a model that knows them in closed form (the oracle): the score ŝ at the rows of
    /// `x` — x_t itself, not the network's input — at `time`, and its divergence ∇·ŝ per row
    /// (`[n]`, f64). `None` (the default): a network, whose divergence autograd computes
    /// ([`crate::likelihood`]).
    fn score_divergence(&self, _x: &Tensor, _time: &Time) -> Option<Result<(Tensor, Tensor)>> {
        None
    }

    /// For a model that knows them in closed form: the score at the rows of `x` (x_t) and its
    /// Jacobian-vector products (∂ŝ/∂x) v for each probe of `probes` (`[n, k, ...]`: row i's
    /// k probes), as `[n, k, ...]` — so that Hutchinson's estimator can be checked against the exact trace.
    fn score_jvp(
        &self,
        _x: &Tensor,
        _time: &Time,
        _probes: &Tensor,
    ) -> Option<Result<(Tensor, Tensor)>> {
        None
    }

    /// Writes the trainable variables as safetensors (a no-op for a model with none).
    fn save(&self, path: &Path) -> Result<()> {
        match self.varmap() {
            Some(vm) => crate::io::save_varmap_atomic(vm, path),
            None => Ok(()),
        }
    }

    /// Loads the trainable variables from safetensors into the built model, all or nothing
    /// ([`io::load_varmap`](crate::io::load_varmap)); a model with none has nothing to load.
    /// It takes `&self`: the variables are shared tensors set in place, so a model behind an
    /// `Arc` loads as it is.
    fn load(&self, path: &Path) -> Result<()> {
        match self.varmap() {
            Some(vm) => crate::io::load_varmap(vm, path),
            None => Ok(()),
        }
    }
}

/// A model with a fixed target reported in another one: its output read as ε̂ through its
/// own parameterization, then written in `to`'s target (MATH.md §3). Conformance reads the
/// oracle's exact score this way in every target, so every conversion is tested on an exact
/// answer; a user can do the same (an exact teacher in a student's target).
#[derive(Debug, Clone)]
pub struct Retarget {
    inner: Arc<dyn ScoreModel>,
    from: ParamEntry,
    to: ParamEntry,
}

impl Retarget {
    /// `inner`, which must fix its target, reported in `to`.
    pub fn new(inner: Arc<dyn ScoreModel>, to: ParamEntry) -> Result<Self> {
        let from = inner.target().ok_or_else(|| {
            crate::Error::Msg(format!(
                "cannot retarget {inner:?}: it learns its target instead of fixing one"
            ))
        })?;
        Ok(Self { inner, from, to })
    }

    /// The model inside.
    pub fn inner(&self) -> &Arc<dyn ScoreModel> {
        &self.inner
    }
}

impl ScoreModel for Retarget {
    fn sample_shape(&self) -> Vec<usize> {
        self.inner.sample_shape()
    }

    fn forward(&self, x: &Tensor, at: &At, cond: Option<&Tensor>) -> Result<Tensor> {
        let (to, from) = (&*self.to.plugin, &*self.from.plugin);
        let x = to.undo_input(x, &at.time)?;
        let inner_at = At::new(at.time.clone(), from)
            .with_dropout(at.dropout)
            .with_second_order(at.second_order);
        let out = self
            .inner
            .forward(&from.input(&x, &at.time)?, &inner_at, cond)?;
        let eps = from.to_eps(&out, &x, &at.time)?;
        to.from_eps(&eps, &x, &at.time)
    }

    fn target(&self) -> Option<ParamEntry> {
        Some(self.to.clone())
    }

    fn rows_independent(&self) -> bool {
        self.inner.rows_independent()
    }

    fn second_order(&self) -> bool {
        self.inner.second_order()
    }

    fn classes(&self) -> Option<usize> {
        self.inner.classes()
    }

    fn activation_bytes_per_row(&self, dtype: candle_core::DType) -> u64 {
        self.inner.activation_bytes_per_row(dtype)
    }

    fn exact_law(&self) -> Option<&crate::mixture::GaussianMixture> {
        self.inner.exact_law()
    }

    fn score_divergence(&self, x: &Tensor, time: &Time) -> Option<Result<(Tensor, Tensor)>> {
        self.inner.score_divergence(x, time)
    }

    fn frozen(&self) -> Option<Arc<dyn ScoreModel>> {
        self.inner.frozen().map(|inner| {
            Arc::new(Self {
                inner,
                from: self.from.clone(),
                to: self.to.clone(),
            }) as Arc<dyn ScoreModel>
        })
    }

    fn score_jvp(
        &self,
        x: &Tensor,
        time: &Time,
        probes: &Tensor,
    ) -> Option<Result<(Tensor, Tensor)>> {
        self.inner.score_jvp(x, time, probes)
    }
}
