//! The [`ScoreModel`] trait: the network, or an exact oracle.

use std::{fmt::Debug, path::Path, sync::Arc};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::{Parameterization, Result, TimeCoefs};

/// What a score model is built with: the parameterization its output is read in, and where
/// and in what precision it runs.
#[derive(Debug, Clone)]
pub struct ModelContext {
    /// The parameterization the pipeline reads the output in. A trained network ignores it
    /// (it predicts what it was trained on); an oracle reports its exact answer in it.
    pub param: Arc<dyn Parameterization>,
    /// The device.
    pub device: Device,
    /// The floating-point type of inputs and outputs.
    pub dtype: DType,
}

/// A model of the score, evaluated in row batches `x: [n, ...]` at one time.
pub trait ScoreModel: Send + Sync + Debug {
    /// The shape of one sample, without the batch dimension.
    fn sample_shape(&self) -> Vec<usize>;

    /// The model output at `x` and time coefficients `c`, in the target of the pipeline's
    /// parameterization. `cond` is optional conditioning (reserved for guidance).
    fn forward(&self, x: &Tensor, c: &TimeCoefs, cond: Option<&Tensor>) -> Result<Tensor>;

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

    /// The trainable variables, if any.
    fn varmap(&self) -> Option<&VarMap> {
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
