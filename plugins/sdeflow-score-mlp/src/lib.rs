//! A multilayer perceptron score network on candle-nn.
//!
//! # Formula
//! The network conditions on the noise-level input c_noise the parameterization gives it
//! (MATH.md §9; the half log-SNR λ = log(α/σ) by default, which does not depend on how an SDE
//! parameterizes time; EDM's ¼ ln σ̃ under `edm`), through a sinusoidal embedding of E
//! dimensions: `e(c) = [sin(c ω_k), cos(c ω_k)]`, `ω_k = P^{−k/(E/2)}`, k = 0 … E/2 − 1
//! (Vaswani et al.'s frequencies with maximal period P). Then, with SiLU(u) = u/(1 + e^{−u}),
//! `h₁ = SiLU(W₁ [x; e(c)] + b₁)`, `h_{i+1} = SiLU(W_{i+1} h_i + b_{i+1})` for the hidden
//! layers, and `out = W_o h_L + b_o`: the target `param:` names, which the network learns.
//! The first layer is evaluated as `W₁ˣ x + (W₁ᵉ e(c) + b₁)`: with one time per call (sampling)
//! the embedding's product is one row, not one per sample; with one time per row (training) it
//! is one row per sample. Weights start as PyTorch's
//! `nn.Linear` default, uniform in ±1/√fan_in, drawn from Philox with `seed` (the same seed
//! gives the same network on every machine).
//!
//! # Parameters
//! - `dim`: the sample dimension d. Default 2.
//! - `hidden`: the width of each hidden layer. Default 256.
//! - `layers`: the number of hidden layers, ≥ 1. Default 3.
//! - `embed_dim`: E, even, ≥ 2. Default 128.
//! - `max_period`: P > 1. Default 10,000.
//! - `seed`: the initial weights' seed. Default 0.
//!
//! # Claims
//! Output shape = input shape [n, d] at any n, per call and per row; finite for finite c_noise;
//! a row at its own time gives what a call at that time gives it (to rounding); rows are not independent
//! bit for bit (candle's matmul changes kernels with the batch size), so the pipeline chunks;
//! every parameter receives a gradient; save then load reproduces the outputs bit for bit; its
//! frozen copy (weights off autograd's graph, sharing their storage, for a likelihood's trace)
//! gives the same score and divergence.
//!
//! # References
//! Vaswani et al., "Attention Is All You Need", NeurIPS 2017, §3.5 (sinusoidal embedding);
//! Ho, Jain & Abbeel, NeurIPS 2020, Appendix B (time embedding); Kingma et al., "Variational
//! Diffusion Models", NeurIPS 2021, §3 (conditioning on the log-SNR); Elfwing, Uchibe & Doya,
//! Neural Networks 107, 2018 (SiLU).

pub mod fused;

use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::VarMap;
use sdeflow_kernel::{
    At, Error, ModelContext, PerRow, Result, ScoreModel,
    noise::{Stream, philox_key, uniform_f64},
    register_model,
};
use serde::{Deserialize, Serialize};

/// The MLP's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// The sample dimension d.
    pub dim: usize,
    /// The width of each hidden layer.
    pub hidden: usize,
    /// The number of hidden layers.
    pub layers: usize,
    /// The embedding dimension E (even).
    pub embed_dim: usize,
    /// The embedding's maximal period P.
    pub max_period: f64,
    /// The seed of the initial weights.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            dim: 2,
            hidden: 256,
            layers: 3,
            embed_dim: 128,
            max_period: 10_000.0,
            seed: 0,
        }
    }
}

/// One affine layer: `y = x Wᵀ + b`.
#[derive(Debug, Clone)]
struct Affine {
    w: Tensor,
    b: Tensor,
}

impl Affine {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.w.t()?)?.broadcast_add(&self.b)?)
    }

    /// SiLU(x Wᵀ + b), the bias and the activation in one pass ([`fused::bias_silu`]).
    fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(fused::bias_silu_over(x.matmul(&self.w.t()?)?, &self.b)?)
    }
}

/// The MLP.
pub struct Mlp {
    params: Params,
    varmap: VarMap,
    /// The first layer's weight split into its x and embedding columns.
    first_x: Tensor,
    first_e: Tensor,
    first_b: Tensor,
    hidden: Vec<Affine>,
    out: Affine,
    dtype: DType,
    device: Device,
}

/// The variable names, in order: `l0` … `l{L−1}` for the hidden layers, `out` for the output.
fn layer_names(layers: usize) -> Vec<String> {
    (0..layers)
        .map(|i| format!("l{i}"))
        .chain(std::iter::once("out".to_string()))
        .collect()
}

impl std::fmt::Debug for Mlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mlp")
            .field("params", &self.params)
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Mlp {
    /// Checks the parameters, draws the initial weights from `seed` and builds the network in
    /// `ctx`'s dtype on its device.
    pub fn new(p: Params, ctx: &ModelContext) -> Result<Self> {
        let bad = |field: &str, why: String| Err(Error::invalid("mlp", field, why));
        if p.dim == 0 {
            return bad("dim", "must be at least 1".into());
        }
        if p.hidden == 0 {
            return bad("hidden", "must be at least 1".into());
        }
        if p.layers == 0 {
            return bad("layers", "must be at least 1 hidden layer".into());
        }
        if p.embed_dim < 2 || !p.embed_dim.is_multiple_of(2) {
            return bad(
                "embed_dim",
                format!("embed_dim = {} must be even and at least 2", p.embed_dim),
            );
        }
        if !(p.max_period.is_finite() && p.max_period > 1.0) {
            return bad(
                "max_period",
                format!("max_period = {} must be finite and above 1", p.max_period),
            );
        }
        let (dtype, device) = (ctx.dtype, ctx.device.clone());
        let varmap = VarMap::new();
        let key = philox_key(p.seed, Stream::Init);
        let names = layer_names(p.layers);
        let mut shapes = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            let fan_in = match i {
                0 => p.dim + p.embed_dim,
                _ => p.hidden,
            };
            let fan_out = if i + 1 == names.len() {
                p.dim
            } else {
                p.hidden
            };
            shapes.push((fan_out, fan_in));
        }
        let mut layers = Vec::with_capacity(names.len());
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| Error::Msg("mlp: variable map poisoned".into()))?;
            for (i, (name, &(fan_out, fan_in))) in names.iter().zip(&shapes).enumerate() {
                let bound = 1.0 / (fan_in as f64).sqrt();
                // Layer i's weights are Philox "sample" i: indices 0.. for W, then b.
                let draw = |k: usize| (2.0 * uniform_f64(key, i as u64, k as u64) - 1.0) * bound;
                let w: Vec<f64> = (0..fan_out * fan_in).map(draw).collect();
                let b: Vec<f64> = (0..fan_out).map(|k| draw(fan_out * fan_in + k)).collect();
                let w = Var::from_tensor(
                    &Tensor::from_vec(w, (fan_out, fan_in), &device)?.to_dtype(dtype)?,
                )?;
                let b = Var::from_tensor(&Tensor::from_vec(b, fan_out, &device)?.to_dtype(dtype)?)?;
                layers.push(Affine {
                    w: w.as_tensor().clone(),
                    b: b.as_tensor().clone(),
                });
                data.insert(format!("{name}.weight"), w);
                data.insert(format!("{name}.bias"), b);
            }
        }
        let out = layers
            .pop()
            .ok_or_else(|| Error::Msg("mlp: no layers".into()))?;
        let first = layers.remove(0);
        Ok(Self {
            first_x: first.w.narrow(1, 0, p.dim)?,
            first_e: first.w.narrow(1, p.dim, p.embed_dim)?,
            first_b: first.b,
            hidden: layers,
            out,
            params: p,
            varmap,
            dtype,
            device,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The sinusoidal embeddings e(c) of `levels`, one [E] row each.
    fn embedding(&self, levels: &[f64]) -> Result<Tensor> {
        let half = self.params.embed_dim / 2;
        let ln_p = self.params.max_period.ln();
        let freqs: Vec<f64> = (0..half)
            .map(|k| (-ln_p * k as f64 / half as f64).exp())
            .collect();
        let mut e = Vec::with_capacity(levels.len() * self.params.embed_dim);
        for &c in levels {
            let (sin, cos): (Vec<f64>, Vec<f64>) = freqs.iter().map(|w| (c * w).sin_cos()).unzip();
            e.extend(sin);
            e.extend(cos);
        }
        Ok(
            Tensor::from_vec(e, (levels.len(), self.params.embed_dim), &self.device)?
                .to_dtype(self.dtype)?,
        )
    }
}

impl Affine {
    fn detached(&self) -> Self {
        Self {
            w: self.w.detach(),
            b: self.b.detach(),
        }
    }
}

impl ScoreModel for Mlp {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.params.dim]
    }

    fn frozen(&self) -> Option<std::sync::Arc<dyn ScoreModel>> {
        Some(std::sync::Arc::new(Self {
            params: self.params.clone(),
            varmap: self.varmap.clone(),
            first_x: self.first_x.detach(),
            first_e: self.first_e.detach(),
            first_b: self.first_b.detach(),
            hidden: self.hidden.iter().map(Affine::detached).collect(),
            out: self.out.detached(),
            dtype: self.dtype,
            device: self.device.clone(),
        }))
    }

    fn forward(&self, x: &Tensor, at: &At, _cond: Option<&Tensor>) -> Result<Tensor> {
        let d = self.params.dim;
        if x.rank() != 2 || x.dim(D::Minus1)? != d {
            return Err(Error::Shape(format!(
                "mlp: input of shape {:?}, expected [n, {d}]",
                x.dims()
            )));
        }
        at.c_noise.expect_rows(x.dim(0)?, "mlp")?;
        let levels = match &at.c_noise {
            PerRow::Call(c) => std::slice::from_ref(c),
            PerRow::Rows(r) => r.values(),
        };
        if let Some(bad) = levels.iter().position(|c| !c.is_finite()) {
            return Err(Error::invalid(
                "mlp",
                "t",
                format!(
                    "the noise-level input {} of row {bad} is not finite",
                    levels[bad]
                ),
            ));
        }
        // W₁ [x; e] + b₁ = W₁ˣ x + (W₁ᵉ e + b₁): per call, the embedding's part is one row. The
        // two column blocks of W₁ are copied contiguous first: cuBLAS (candle's CUDA matmul)
        // refuses the transposed view of a column slice, which the CPU's gemm accepts.
        let shift = self
            .embedding(levels)?
            .matmul(&self.first_e.contiguous()?.t()?)?
            .broadcast_add(&self.first_b)?;
        let mut h = fused::bias_silu_over(
            x.to_dtype(self.dtype)?
                .matmul(&self.first_x.contiguous()?.t()?)?,
            &shift,
        )?;
        for layer in &self.hidden {
            h = layer.forward_silu(&h)?;
        }
        Ok(self.out.forward(&h)?.to_dtype(x.dtype())?)
    }

    fn varmap(&self) -> Option<&VarMap> {
        Some(&self.varmap)
    }

    fn load(&self, path: &Path) -> Result<()> {
        sdeflow_kernel::io::load_varmap(&self.varmap, path).map_err(|e| {
            Error::Msg(format!(
                "mlp: cannot load weights from {}: {e} (a checkpoint of an mlp with dim {}, hidden {}, layers {}, embed_dim {} is expected)",
                path.display(),
                self.params.dim,
                self.params.hidden,
                self.params.layers,
                self.params.embed_dim
            ))
        })
    }
}

register_model!(
    "mlp",
    "MLP score network: sinusoidal log-SNR embedding, SiLU hidden layers (candle-nn)",
    Params,
    |p: Params, ctx: &ModelContext| Mlp::new(p, ctx)
);
