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
//! # Execution
//! On the CPU, in f32 or f64, the network is one candle op with its own backward
//! (`cpu`): rows go through every layer in blocks of 256, spread over rayon's threads, on the
//! `gemm` crate's kernels with bias + SiLU fused and a vectorised exp; the output and every
//! gradient are the same bytes at any thread count (tested), and match the network written as
//! candle's ops to 1e-5 of each tensor's scale in f32 and 1e-12 in f64 (tested). A forward no
//! graph records (sampling) keeps nothing for a backward. Elsewhere (a GPU), and for a caller
//! that differentiates a gradient again (`At::second_order`: implicit and sliced score
//! matching), the network is candle's ops.
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
//! bit for bit (a row's products depend on its block of rows), so the pipeline chunks;
//! every parameter receives a gradient; save then load reproduces the outputs bit for bit; its
//! frozen copy (weights off autograd's graph, sharing their storage, for a likelihood's trace)
//! gives the same score and divergence; with `At::second_order` its input gradients are on
//! autograd's graph (`second_order`), so losses of ∇ₓ·ŝ train it.
//!
//! # References
//! Vaswani et al., "Attention Is All You Need", NeurIPS 2017, §3.5 (sinusoidal embedding);
//! Ho, Jain & Abbeel, NeurIPS 2020, Appendix B (time embedding); Kingma et al., "Variational
//! Diffusion Models", NeurIPS 2021, §3 (conditioning on the log-SNR); Elfwing, Uchibe & Doya,
//! Neural Networks 107, 2018 (SiLU).

mod cpu;
mod fused;
mod gemm;

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

/// The MLP.
pub struct Mlp {
    params: Params,
    varmap: VarMap,
    /// Every weight in θ's order ([`cpu::Dims::pieces`]): W₁, b₁, …, W_o, b_o.
    theta: Vec<Tensor>,
    /// The embedding's frequencies ω_k.
    freqs: Vec<f64>,
    /// Buffers the CPU network reuses from step to step.
    pool: cpu::SharedPool,
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
        let mut theta = Vec::with_capacity(2 * names.len());
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
                theta.extend([w.as_tensor().clone(), b.as_tensor().clone()]);
                data.insert(format!("{name}.weight"), w);
                data.insert(format!("{name}.bias"), b);
            }
        }
        let half = p.embed_dim / 2;
        let ln_p = p.max_period.ln();
        let freqs = (0..half)
            .map(|k| (-ln_p * k as f64 / half as f64).exp())
            .collect();
        Ok(Self {
            theta,
            freqs,
            pool: cpu::SharedPool::default(),
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
        let mut e = Vec::with_capacity(levels.len() * self.params.embed_dim);
        for &c in levels {
            let (sin, cos): (Vec<f64>, Vec<f64>) =
                self.freqs.iter().map(|w| (c * w).sin_cos()).unzip();
            e.extend(sin);
            e.extend(cos);
        }
        Ok(
            Tensor::from_vec(e, (levels.len(), self.params.embed_dim), &self.device)?
                .to_dtype(self.dtype)?,
        )
    }

    /// The same network with its weights off autograd's graph, sharing their storage.
    fn detached(&self) -> Self {
        Self {
            params: self.params.clone(),
            varmap: self.varmap.clone(),
            theta: self.theta.iter().map(Tensor::detach).collect(),
            freqs: self.freqs.clone(),
            pool: self.pool.clone(),
            dtype: self.dtype,
            device: self.device.clone(),
        }
    }

    /// The sizes the CPU network takes.
    fn dims(&self) -> cpu::Dims {
        cpu::Dims {
            d: self.params.dim,
            e: self.params.embed_dim,
            h: self.params.hidden,
            layers: self.params.layers,
        }
    }

    /// The network on the CPU ([`cpu`]), x `[n, d]` contiguous in the model's dtype: one op
    /// with its backward when a graph records x or the weights, a direct pass otherwise.
    fn forward_cpu(&self, x: &Tensor, levels: &[f64]) -> Result<Tensor> {
        let tracked = x.track_op() || self.theta.iter().any(Tensor::track_op);
        if tracked {
            let flat = self
                .theta
                .iter()
                .map(Tensor::flatten_all)
                .collect::<candle_core::Result<Vec<_>>>()?;
            let theta = Tensor::cat(&flat, 0)?;
            let op = cpu::MlpOp::new(
                self.dims(),
                self.freqs.clone(),
                levels.to_vec(),
                self.pool.clone(),
            );
            return Ok(x.apply_op2(&theta, op)?);
        }
        match self.dtype {
            DType::F32 => self.forward_direct::<f32>(x, levels),
            _ => self.forward_direct::<f64>(x, levels),
        }
    }

    /// [`cpu::forward`] over the weights' own storage: no copy, no graph.
    fn forward_direct<T: cpu::Elem>(&self, x: &Tensor, levels: &[f64]) -> Result<Tensor> {
        let guards: Vec<_> = std::iter::once(x)
            .chain(&self.theta)
            .map(Tensor::storage_and_layout)
            .collect();
        let slices = guards
            .iter()
            .map(|(s, l)| match (&**s, l.contiguous_offsets()) {
                (candle_core::Storage::Cpu(s), Some((a, b))) => T::of_storage(s).map(|v| &v[a..b]),
                _ => None,
            })
            .collect::<Option<Vec<&[T]>>>()
            .ok_or_else(|| Error::Msg("mlp: a weight is not a contiguous CPU tensor".into()))?;
        let w = cpu::Weights::new(&slices[1..], self.dims())
            .ok_or_else(|| Error::Msg("mlp: a weight has the wrong size".into()))?;
        let out = cpu::forward(&w, self.dims(), &self.freqs, slices[0], levels);
        let n = x.dim(0)?;
        Ok(Tensor::from_vec(out, (n, self.params.dim), &self.device)?)
    }

    /// The network as candle's ops (a GPU, or a dtype the CPU network does not take).
    fn forward_ops(&self, x: &Tensor, levels: &[f64]) -> Result<Tensor> {
        // W₁ [x; e] + b₁ = W₁ˣ x + (W₁ᵉ e + b₁): per call, the embedding's part is one row. The
        // two column blocks of W₁ are copied contiguous first: cuBLAS (candle's CUDA matmul)
        // refuses the transposed view of a column slice, which the CPU's gemm accepts.
        let (d, e) = (self.params.dim, self.params.embed_dim);
        let affine = |h: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
            Ok(h.matmul(&w.t()?)?.broadcast_add(b)?)
        };
        let [w1, b1, rest @ ..] = self.theta.as_slice() else {
            return Err(Error::Msg("mlp: no first layer".into()));
        };
        let shift = self
            .embedding(levels)?
            .matmul(&w1.narrow(1, d, e)?.contiguous()?.t()?)?
            .broadcast_add(b1)?;
        let mut h = x
            .matmul(&w1.narrow(1, 0, d)?.contiguous()?.t()?)?
            .broadcast_add(&shift)?
            .silu()?;
        let (hidden, out) = rest.split_at(rest.len().saturating_sub(2));
        for wb in hidden.chunks_exact(2) {
            h = affine(&h, &wb[0], &wb[1])?.silu()?;
        }
        let [wo, bo] = out else {
            return Err(Error::Msg("mlp: no output layer".into()));
        };
        affine(&h, wo, bo)
    }
}

impl ScoreModel for Mlp {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.params.dim]
    }

    /// Each layer's pre-activation, activation and their gradients, and the embedding.
    fn activation_bytes_per_row(&self, dtype: DType) -> u64 {
        let p = &self.params;
        let values = 4 * p.layers * p.hidden + 2 * p.embed_dim + 4 * p.dim;
        values as u64 * dtype.size_in_bytes() as u64
    }

    fn frozen(&self) -> Option<std::sync::Arc<dyn ScoreModel>> {
        Some(std::sync::Arc::new(self.detached()))
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
        let xm = x.to_dtype(self.dtype)?;
        // A caller that differentiates a gradient again (implicit or sliced score matching)
        // gets candle's ops, whose backward autograd differentiates; the CPU op's hand-written
        // backward is first order.
        let out = if matches!(self.device, Device::Cpu)
            && matches!(self.dtype, DType::F32 | DType::F64)
            && !at.second_order
        {
            self.forward_cpu(&xm.contiguous()?, levels)?
        } else {
            self.forward_ops(&xm, levels)?
        };
        Ok(out.to_dtype(x.dtype())?)
    }

    fn second_order(&self) -> bool {
        true
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
    "MLP score network: sinusoidal log-SNR embedding, SiLU hidden layers (its own fused CPU op; candle's ops elsewhere)",
    Params,
    |p: Params, ctx: &ModelContext| Mlp::new(p, ctx)
);

#[cfg(test)]
mod tests {
    use candle_core::Var;
    use sdeflow_kernel::testing::normals;

    use super::*;

    /// An mlp of `dtype` with small odd sizes (3 hidden layers of 20, E = 8).
    fn small(dtype: DType) -> Result<Mlp> {
        let p = Params {
            dim: 3,
            hidden: 20,
            layers: 3,
            embed_dim: 8,
            seed: 5,
            ..Params::default()
        };
        Mlp::new(p, &ModelContext::new(Device::Cpu, dtype))
    }

    /// The largest |entry| of a tensor, in f64.
    fn max_abs(t: &Tensor) -> f64 {
        t.abs()
            .and_then(|t| t.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar())
            .unwrap_or(f64::NAN)
    }

    /// max |got − want| ≤ tol · max |want|: a wrong term would be off by the scale itself.
    fn close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}: shape");
        let gap = max_abs(
            &(got.to_dtype(DType::F64).unwrap() - want.to_dtype(DType::F64).unwrap()).unwrap(),
        );
        let scale = max_abs(want);
        assert!(scale > 0.0, "{what}: zero reference");
        assert!(
            gap <= tol * scale,
            "{what}: off by {gap:e} at scale {scale:e}"
        );
    }

    /// The output, ∂L/∂x and ∂L/∂(every variable) of L = Σ out ⊙ w, by `run`.
    fn output_and_grads(
        m: &Mlp,
        x0: &Tensor,
        w: &Tensor,
        run: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Vec<(String, Tensor)>> {
        let x = Var::from_tensor(x0)?;
        let out = run(x.as_tensor())?;
        let grads = (&out * w)?.sum_all()?.backward()?;
        let mut all = vec![
            ("out".to_string(), out.detach()),
            (
                "∂x".to_string(),
                grads.get(&x).cloned().ok_or(Error::Msg("no ∂x".into()))?,
            ),
        ];
        let vars = m
            .varmap
            .data()
            .lock()
            .map_err(|_| Error::Msg("poisoned".into()))?;
        let mut names: Vec<_> = vars.keys().cloned().collect();
        names.sort();
        for name in names {
            let g = grads
                .get(vars[&name].as_tensor())
                .cloned()
                .ok_or_else(|| Error::Msg(format!("no gradient for {name}")))?;
            all.push((format!("∂{name}"), g));
        }
        Ok(all)
    }

    /// The CPU network ([`cpu`]) against the same network as candle's ops: the output, ∂x and
    /// every weight's gradient, in f32 (1e-5 of each tensor's scale) and f64 (1e-12), with one
    /// level per call and one per row, at 300 rows (a full block and a partial one); and the
    /// direct pass of the frozen copy equal to the recorded op's output.
    #[test]
    fn cpu_network_matches_candles_ops() -> Result<()> {
        let n = 300;
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            let m = small(dtype)?;
            let x0 = normals(1, n, 3)?.to_dtype(dtype)?;
            let w = normals(2, n, 3)?.to_dtype(dtype)?;
            let rows: Vec<f64> = (0..n).map(|i| -6.0 + 12.0 * i as f64 / n as f64).collect();
            for levels in [vec![0.7], rows] {
                let what = format!("{dtype:?}, {} levels", levels.len());
                let got = output_and_grads(&m, &x0, &w, |x| m.forward_cpu(x, &levels))?;
                let want = output_and_grads(&m, &x0, &w, |x| m.forward_ops(x, &levels))?;
                for ((name, g), (_, w)) in got.iter().zip(&want) {
                    close(g, w, tol, &format!("{what}: {name}"));
                }
                let direct = m.detached().forward_cpu(&x0, &levels)?;
                close(&direct, &got[0].1, tol, &format!("{what}: the direct pass"));
            }
        }
        Ok(())
    }

    /// The output and every gradient are the same bytes on 1, 2 and 3 threads: blocks of rows
    /// and gemm's output tiles do not depend on the thread count.
    #[test]
    fn cpu_network_is_the_same_on_any_thread_count() -> Result<()> {
        let n = 700;
        let m = small(DType::F32)?;
        let x0 = normals(3, n, 3)?.to_dtype(DType::F32)?;
        let w = normals(4, n, 3)?.to_dtype(DType::F32)?;
        let levels: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin() * 5.0).collect();
        let on = |threads: usize| -> Result<Vec<Vec<f32>>> {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| Error::Msg(e.to_string()))?;
            pool.install(|| {
                let mut all = output_and_grads(&m, &x0, &w, |x| m.forward_cpu(x, &levels))?;
                all.push(("direct".into(), m.detached().forward_cpu(&x0, &[0.3])?));
                all.iter()
                    .map(|(_, t)| Ok(t.flatten_all()?.to_vec1::<f32>()?))
                    .collect()
            })
        };
        let one = on(1)?;
        for threads in [2, 3] {
            assert!(on(threads)? == one, "{threads} threads differ from 1");
        }
        Ok(())
    }
}
