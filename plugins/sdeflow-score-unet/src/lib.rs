//! A UNet score network for images, DDPM's and score_sde's `ddpm` architecture, on candle-nn
//! and candle-transformers.
//!
//! # Formula
//! The network F maps the network input x = c_in·x_t (`[n, C, H, W]`) and the noise-level input
//! c_noise the parameterization gives it (MATH.md §3 and §9: the half log-SNR λ by default, EDM's
//! ¼ ln σ̃ under `edm`) to the target `param:` names, of x's shape.
//! - Noise-level embedding: `e = sinusoid(s·c_noise)` with s = `noise_scale`, the `base` sines
//!   and cosines of DDPM, `[sin(s c ω_k), cos(s c ω_k)]`, ω_k = 10000^{−k/(base/2 − 1)} (rounded
//!   to f32: candle-transformers computes them so; the products and sines are in the dtype), then
//!   `temb = W₂ SiLU(W₁ e + b₁) + b₂` of width 4·base (candle-transformers' `Timesteps` with
//!   downscale shift 1 and `TimestepEmbedding`). With `classes: Some(k)`, row y of a (k+1)-row
//!   table is added (row k is ∅, also what `cond: None` means).
//! - Residual block (DDPM): `h = conv₁(SiLU(GN(x))) + Linear(SiLU(temb))` per channel, then
//!   `out = skip(x) + conv₂(dropout(SiLU(GN(h))))`, skip a 1×1 conv when the channels change.
//!   Dropout is the kernel's (`RowKey::dropout`, masks keyed by step, row and block), on only when
//!   a training step passes `At::dropout`.
//! - Attention (at the levels whose resolution min(h, w) is listed, and in the middle):
//!   `x + P softmax(Q Kᵀ/√d) V` over the h·w positions of GN(x), per head of d channels.
//! - Down: conv_in 3×3 to `base`; level ℓ: `blocks` residual blocks to base·m_ℓ channels
//!   (each followed by attention where listed), a stride-2 conv3×3 except at the last level.
//!   Middle: residual, attention, residual. Up, levels in reverse: `blocks + 1` residual blocks
//!   on [h; skip] (the down path's activations, last first), attention as on the way down,
//!   nearest ×2 then conv3×3 except at level 0. Out: conv3×3(SiLU(GN(h))) to C channels.
//!
//! Every variable is drawn from Philox with `seed` (`Stream::Init`, sample index a hash of
//! its name), under the initialisation candle-nn's constructors ask for: convolution and
//! linear weights Kaiming-normal (fan-in, gain √2), biases uniform in ±1/√(input channels), GroupNorm
//! 1 and 0, the class table N(0, 1). The output conv is not zero: every variable gets a
//! gradient at initialisation.
//!
//! # Parameters
//! - `channels`: C, the image channels. Default 1.
//! - `height`, `width`: H, W, each a multiple of 2^(levels − 1). Default 8, 8.
//! - `base`: the channels of level 0, even, ≥ 4 (also the sinusoid's width). Default 16.
//! - `multipliers`: m_ℓ, one per level. Default [1, 2].
//! - `blocks`: residual blocks per level on the way down (one more on the way up). Default 1.
//! - `attention`: the resolutions min(h, w) with self-attention, each a level's. Default [4].
//! - `head_channels`: channels per attention head; `None`: one head (DDPM). Default None.
//! - `groups`: GroupNorm's groups, dividing every base·m_ℓ. Default 4.
//! - `dropout`: the residual blocks' dropout probability in training, in [0, 1). Default 0.
//! - `classes`: `Some(k)` for a class-conditional network (labels 0 … k − 1, ∅ = k). Default None.
//! - `noise_scale`: s, the factor on c_noise before the sinusoid (1: c_noise as it is, as the
//!   mlp and EDM; 999 for DDPM's t ∈ [0, 1]). Default 1.
//! - `seed`: the initial weights' seed. Default 0.
//!
//! # Claims
//! Output shape = input shape [n, C, H, W] at any n, per call and per row (a per-call c_noise is
//! repeated over the rows); a row at its own noise level gives what a call at that level gives
//! it (to rounding; rows are not independent bit for bit: candle's conv and matmul kernels
//! change with the batch, so the pipeline chunks); f64 throughout in f64 (this is why the
//! attention is written here: candle-transformers' casts to f32); `cond: None` is the ∅ label
//! bit for bit; a dropout row's mask depends on its step, row and block only; every variable
//! gets a gradient; save then load reproduces the outputs bit for bit; the frozen copy
//! (weights detached, sharing storage) gives the same outputs.
//!
//! # References
//! Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020, Appendix B
//! (architecture); Song et al., "Score-Based Generative Modeling through SDEs", ICLR 2021
//! (score_sde's `ddpm` model); Ronneberger et al., "U-Net", MICCAI 2015; Vaswani et al.,
//! NeurIPS 2017, §3.5 (sinusoidal embedding); Wu & He, "Group Normalization", ECCV 2018;
//! Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022 (the ∅ label); Srivastava et al.,
//! JMLR 15, 2014 (dropout). candle-transformers' `ResnetBlock2D` has no dropout and
//! `upsample_nearest2d`'s backward overwrites gradients: both are written here on candle-nn.

mod blocks;
mod init;

use std::{path::Path, sync::Arc};

use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2d, Embedding, GroupNorm, Module, VarBuilder, VarMap};
use candle_transformers::models::stable_diffusion::embeddings::{TimestepEmbedding, Timesteps};
use sdeflow_kernel::{At, Error, ModelContext, PerRow, Result, ScoreModel, register_model};
use serde::{Deserialize, Serialize};

use blocks::{Attention, Drop, NORM_EPS, ResBlock, conv3, upsample2};

/// The UNet's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// C, the image channels.
    pub channels: usize,
    /// H.
    pub height: usize,
    /// W.
    pub width: usize,
    /// The channels of level 0.
    pub base: usize,
    /// The channel multiplier of each level.
    pub multipliers: Vec<usize>,
    /// Residual blocks per level on the way down.
    pub blocks: usize,
    /// The resolutions min(h, w) with self-attention.
    pub attention: Vec<usize>,
    /// Channels per attention head; `None`: one head.
    pub head_channels: Option<usize>,
    /// GroupNorm's groups.
    pub groups: usize,
    /// The residual blocks' dropout probability in training.
    pub dropout: f64,
    /// The number of classes of a conditional network.
    pub classes: Option<usize>,
    /// The factor on c_noise before the sinusoid.
    pub noise_scale: f64,
    /// The seed of the initial weights.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            channels: 1,
            height: 8,
            width: 8,
            base: 16,
            multipliers: vec![1, 2],
            blocks: 1,
            attention: vec![4],
            head_channels: None,
            groups: 4,
            dropout: 0.0,
            classes: None,
            noise_scale: 1.0,
            seed: 0,
        }
    }
}

/// One level of the down or up path: residual blocks, each with its attention, then the
/// resampling convolution.
struct Level {
    blocks: Vec<(ResBlock, Option<Attention>)>,
    resample: Option<Conv2d>,
}

/// The network's layers.
struct Net {
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    class_embedding: Option<Embedding>,
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: (ResBlock, Attention, ResBlock),
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Net {
    /// Builds the layers from `vb` (drawing or reading each variable). `p` is checked.
    fn build(p: &Params, vb: &VarBuilder<'_>) -> Result<Self> {
        let (temb, g, levels) = (4 * p.base, p.groups, p.multipliers.len());
        let res = |lv: usize| p.height.min(p.width) >> lv;
        let heads = |c: usize| p.head_channels.map_or(1, |hc| c / hc);
        let attn = |vb: VarBuilder<'_>, c: usize| Attention::new(vb, c, heads(c), g);
        // Attention after block b of level lv when the level's resolution is listed.
        let attn_at = |lv: usize, vb: &VarBuilder<'_>, b: usize, c: usize| {
            p.attention
                .contains(&res(lv))
                .then(|| attn(vb.pp(format!("attn.{b}")), c))
                .transpose()
        };
        let mut layer = 0u64;
        let mut next = || {
            layer += 1;
            layer - 1
        };
        let mut ch = p.base;
        let mut skips = vec![ch];
        let mut down = Vec::with_capacity(levels);
        for (lv, m) in p.multipliers.iter().enumerate() {
            let vb = vb.pp(format!("down.{lv}"));
            let mut blocks = Vec::with_capacity(p.blocks);
            for b in 0..p.blocks {
                let block =
                    ResBlock::new(vb.pp(format!("res.{b}")), ch, p.base * m, temb, g, next())?;
                ch = p.base * m;
                let a = attn_at(lv, &vb, b, ch)?;
                blocks.push((block, a));
                skips.push(ch);
            }
            let resample = if lv + 1 < levels {
                skips.push(ch);
                Some(conv3(ch, ch, 2, vb.pp("downsample"))?)
            } else {
                None
            };
            down.push(Level { blocks, resample });
        }
        let mid = (
            ResBlock::new(vb.pp("mid.res.0"), ch, ch, temb, g, next())?,
            attn(vb.pp("mid.attn"), ch)?,
            ResBlock::new(vb.pp("mid.res.1"), ch, ch, temb, g, next())?,
        );
        let mut up = Vec::with_capacity(levels);
        for (lv, m) in p.multipliers.iter().enumerate().rev() {
            let vb = vb.pp(format!("up.{lv}"));
            let mut blocks = Vec::with_capacity(p.blocks + 1);
            for b in 0..=p.blocks {
                let skip = skips.pop().unwrap_or_default();
                let block = ResBlock::new(
                    vb.pp(format!("res.{b}")),
                    ch + skip,
                    p.base * m,
                    temb,
                    g,
                    next(),
                )?;
                ch = p.base * m;
                let a = attn_at(lv, &vb, b, ch)?;
                blocks.push((block, a));
            }
            let resample = if lv > 0 {
                Some(conv3(ch, ch, 1, vb.pp("upsample"))?)
            } else {
                None
            };
            up.push(Level { blocks, resample });
        }
        let class_embedding = match p.classes {
            Some(k) => Some(candle_nn::embedding(k + 1, temb, vb.pp("class_embedding"))?),
            None => None,
        };
        Ok(Self {
            time_proj: Timesteps::new(p.base, false, 1.0),
            time_embedding: TimestepEmbedding::new(vb.pp("time_embedding"), p.base, temb)?,
            class_embedding,
            conv_in: conv3(p.channels, p.base, 1, vb.pp("conv_in"))?,
            down,
            mid,
            up,
            norm_out: candle_nn::group_norm(g, ch, NORM_EPS, vb.pp("norm_out"))?,
            conv_out: conv3(ch, p.channels, 1, vb.pp("conv_out"))?,
        })
    }

    /// F(x, c) for `x` `[n, C, H, W]`, `c` the scaled noise levels `[n]`, `labels` `[n]` u32.
    fn forward(
        &self,
        x: &Tensor,
        c: &Tensor,
        labels: Option<&Tensor>,
        drop: &Drop,
    ) -> Result<Tensor> {
        let mut temb = self.time_embedding.forward(&self.time_proj.forward(c)?)?;
        if let (Some(table), Some(y)) = (&self.class_embedding, labels) {
            temb = (temb + table.forward(y)?)?;
        }
        let act = temb.silu()?;
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (block, attn) in &level.blocks {
                h = block.forward(&h, &act, drop)?;
                if let Some(a) = attn {
                    h = a.forward(&h)?;
                }
                skips.push(h.clone());
            }
            if let Some(conv) = &level.resample {
                h = conv.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid.0.forward(&h, &act, drop)?;
        h = self.mid.1.forward(&h)?;
        h = self.mid.2.forward(&h, &act, drop)?;
        for level in &self.up {
            for (block, attn) in &level.blocks {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::Msg("unet: skip connections exhausted".into()))?;
                h = block.forward(&Tensor::cat(&[&h, &skip], 1)?, &act, drop)?;
                if let Some(a) = attn {
                    h = a.forward(&h)?;
                }
            }
            if let Some(conv) = &level.resample {
                h = conv.forward(&upsample2(&h)?)?;
            }
        }
        Ok(self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)?)
    }
}

/// The UNet.
pub struct Unet {
    params: Params,
    varmap: VarMap,
    net: Net,
    dtype: DType,
    device: Device,
}

impl std::fmt::Debug for Unet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unet")
            .field("params", &self.params)
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// Checks `p`, naming the field at fault and what would be valid.
fn check(p: &Params) -> Result<()> {
    let bad = |field: &str, why: String| Err(Error::invalid("unet", field, why));
    let levels = p.multipliers.len();
    if p.channels == 0 {
        return bad("channels", "must be at least 1".into());
    }
    if p.base < 4 || !p.base.is_multiple_of(2) {
        return bad(
            "base",
            format!("base = {} must be even and at least 4", p.base),
        );
    }
    if levels == 0 || p.multipliers.contains(&0) {
        return bad(
            "multipliers",
            format!(
                "{:?} must be one or more positive multipliers",
                p.multipliers
            ),
        );
    }
    if p.blocks == 0 {
        return bad("blocks", "must be at least 1".into());
    }
    let step = 1usize << (levels - 1);
    for (field, v) in [("height", p.height), ("width", p.width)] {
        if v == 0 || !v.is_multiple_of(step) {
            let (lo, hi) = (v / step * step, (v / step + 1) * step);
            let near = if lo == 0 {
                format!("{hi}")
            } else {
                format!("{lo} or {hi}")
            };
            return bad(
                field,
                format!(
                    "{field} = {v} must be a positive multiple of 2^(levels − 1) = {step} for {levels} levels (multipliers {:?}): {near}, or fewer levels",
                    p.multipliers
                ),
            );
        }
    }
    let widths: Vec<usize> = p.multipliers.iter().map(|m| p.base * m).collect();
    if p.groups == 0 || widths.iter().any(|w| !w.is_multiple_of(p.groups)) {
        return bad(
            "groups",
            format!(
                "groups = {} must divide every level's channels {widths:?}",
                p.groups
            ),
        );
    }
    let resolutions: Vec<usize> = (0..levels).map(|l| p.height.min(p.width) >> l).collect();
    if let Some(r) = p.attention.iter().find(|r| !resolutions.contains(r)) {
        return bad(
            "attention",
            format!("resolution {r} is not a level's min(h, w); the levels have {resolutions:?}"),
        );
    }
    if let Some(hc) = p.head_channels {
        let attended: Vec<usize> = (0..levels)
            .filter(|&l| p.attention.contains(&resolutions[l]) || l + 1 == levels)
            .map(|l| widths[l])
            .collect();
        if hc == 0 || attended.iter().any(|c| !c.is_multiple_of(hc)) {
            return bad(
                "head_channels",
                format!("{hc} must divide the channels {attended:?} of every attention layer"),
            );
        }
    }
    if !(0.0..1.0).contains(&p.dropout) {
        return bad(
            "dropout",
            format!("{} is not a probability in [0, 1)", p.dropout),
        );
    }
    if p.classes
        .is_some_and(|k| k == 0 || u32::try_from(k).is_err())
    {
        return bad("classes", "must be at least 1 (and fit a u32 label)".into());
    }
    if !(p.noise_scale.is_finite() && p.noise_scale > 0.0) {
        return bad(
            "noise_scale",
            format!("{} must be finite and positive", p.noise_scale),
        );
    }
    Ok(())
}

impl Unet {
    /// Checks the parameters, draws the initial weights from `seed` and builds the network in
    /// `ctx`'s dtype on its device.
    pub fn new(p: Params, ctx: &ModelContext) -> Result<Self> {
        check(&p)?;
        let (dtype, device) = (ctx.dtype, ctx.device.clone());
        let varmap = VarMap::new();
        let net = Net::build(&p, &init::seeded(&varmap, p.seed, dtype, &device))?;
        Ok(Self {
            params: p,
            varmap,
            net,
            dtype,
            device,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Each row's label as a `[n]` u32 tensor: `cond`'s, checked, or ∅ for every row.
    fn labels(&self, k: usize, n: usize, cond: Option<&Tensor>) -> Result<Tensor> {
        let null = sdeflow_kernel::null_label(k);
        let Some(cond) = cond else {
            return Ok(Tensor::full(null, n, &self.device)?);
        };
        let labels = cond.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        if labels.len() != n {
            return Err(Error::Shape(format!(
                "unet: {} labels for {n} rows",
                labels.len()
            )));
        }
        if let Some(bad) = labels.iter().position(|&y| y > null) {
            return Err(Error::invalid(
                "unet",
                "cond",
                format!(
                    "label {} of row {bad} is not a class 0 … {} nor ∅ ({null})",
                    labels[bad],
                    k - 1
                ),
            ));
        }
        Ok(Tensor::from_vec(labels, n, &self.device)?)
    }
}

impl ScoreModel for Unet {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.params.channels, self.params.height, self.params.width]
    }

    /// Per level, on the way down and up: each block's normalised input, activation and
    /// convolution outputs kept for the backward pass (about 12 feature maps a block, the
    /// skips included), and at an attention resolution its scores.
    fn activation_bytes_per_row(&self, dtype: DType) -> u64 {
        let p = &self.params;
        let mut values: u64 = 0;
        for (level, mult) in p.multipliers.iter().enumerate() {
            let pixels = ((p.height >> level).max(1) * (p.width >> level).max(1)) as u64;
            let maps = (p.base * mult) as u64 * pixels;
            values += 2 * (p.blocks as u64 + 1) * 12 * maps;
            if p.attention
                .contains(&(p.height >> level).min(p.width >> level))
            {
                values += 4 * pixels * pixels;
            }
        }
        values * dtype.size_in_bytes() as u64
    }

    fn classes(&self) -> Option<usize> {
        self.params.classes
    }

    fn frozen(&self) -> Option<Arc<dyn ScoreModel>> {
        let vb = init::detached(&self.varmap, self.dtype, &self.device);
        let net = Net::build(&self.params, &vb).ok()?;
        Some(Arc::new(Self {
            params: self.params.clone(),
            varmap: self.varmap.clone(),
            net,
            dtype: self.dtype,
            device: self.device.clone(),
        }))
    }

    fn forward(&self, x: &Tensor, at: &At, cond: Option<&Tensor>) -> Result<Tensor> {
        let want = [
            0,
            self.params.channels,
            self.params.height,
            self.params.width,
        ];
        if x.rank() != 4 || x.dims()[1..] != want[1..] {
            return Err(Error::Shape(format!(
                "unet: input of shape {:?}, expected [n, {}, {}, {}]",
                x.dims(),
                want[1],
                want[2],
                want[3]
            )));
        }
        let n = x.dim(0)?;
        at.c_noise.expect_rows(n, "unet")?;
        let levels = match &at.c_noise {
            PerRow::Call(c) => vec![*c; n],
            PerRow::Rows(r) => r.values().to_vec(),
        };
        if let Some(bad) = levels.iter().position(|c| !c.is_finite()) {
            return Err(Error::invalid(
                "unet",
                "t",
                format!(
                    "the noise-level input {} of row {bad} is not finite",
                    levels[bad]
                ),
            ));
        }
        let s = self.params.noise_scale;
        let c = Tensor::from_vec(
            levels.iter().map(|c| s * c).collect::<Vec<f64>>(),
            n,
            &self.device,
        )?
        .to_dtype(self.dtype)?;
        let labels = match self.params.classes {
            Some(k) => Some(self.labels(k, n, cond)?),
            None => None,
        };
        let p = self.params.dropout;
        let drop = at.dropout.filter(|_| p > 0.0).map(|key| (p, key));
        let out = self
            .net
            .forward(&x.to_dtype(self.dtype)?, &c, labels.as_ref(), &drop)?;
        Ok(out.to_dtype(x.dtype())?)
    }

    fn varmap(&self) -> Option<&VarMap> {
        Some(&self.varmap)
    }

    fn load(&self, path: &Path) -> Result<()> {
        sdeflow_kernel::io::load_varmap(&self.varmap, path).map_err(|e| {
            Error::Msg(format!(
                "unet: cannot load weights from {}: {e} (a checkpoint of a unet with {:?} is expected)",
                path.display(),
                self.params
            ))
        })
    }
}

register_model!(
    "unet",
    "DDPM-style UNet for images: residual blocks with dropout, self-attention, class labels (candle-nn, candle-transformers)",
    Params,
    |p: Params, ctx: &ModelContext| Unet::new(p, ctx)
);
