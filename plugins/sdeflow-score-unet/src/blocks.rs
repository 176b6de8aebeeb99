//! The UNet's blocks on candle-nn: the residual block with its noise-level projection and
//! dropout, self-attention, the resamplers.

use candle_core::{D, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, Linear, Module, VarBuilder};
use sdeflow_kernel::{Result, noise::RowKey};

/// GroupNorm's ε (score_sde's and DDPM's).
pub(crate) const NORM_EPS: f64 = 1e-6;

/// A 3×3 convolution, padding 1, stride `stride`.
pub(crate) fn conv3(
    c_in: usize,
    c_out: usize,
    stride: usize,
    vb: VarBuilder<'_>,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    Ok(candle_nn::conv2d(c_in, c_out, 3, cfg, vb)?)
}

/// Dropout of a training step: its probability and the step's row key.
pub(crate) type Drop = Option<(f64, RowKey)>;

/// DDPM's residual block: GroupNorm → SiLU → conv3×3 → + Linear(SiLU(temb)) per channel →
/// GroupNorm → SiLU → dropout → conv3×3, plus the input (through a 1×1 conv when the
/// channels change).
pub(crate) struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    /// The block's index in build order: its dropout layer index.
    layer: u64,
}

impl ResBlock {
    pub(crate) fn new(
        vb: VarBuilder<'_>,
        c_in: usize,
        c_out: usize,
        temb: usize,
        groups: usize,
        layer: u64,
    ) -> Result<Self> {
        let conv_shortcut = if c_in == c_out {
            None
        } else {
            let cfg = Conv2dConfig::default();
            Some(candle_nn::conv2d(
                c_in,
                c_out,
                1,
                cfg,
                vb.pp("conv_shortcut"),
            )?)
        };
        Ok(Self {
            norm1: candle_nn::group_norm(groups, c_in, NORM_EPS, vb.pp("norm1"))?,
            conv1: conv3(c_in, c_out, 1, vb.pp("conv1"))?,
            time_emb_proj: candle_nn::linear(temb, c_out, vb.pp("time_emb_proj"))?,
            norm2: candle_nn::group_norm(groups, c_out, NORM_EPS, vb.pp("norm2"))?,
            conv2: conv3(c_out, c_out, 1, vb.pp("conv2"))?,
            conv_shortcut,
            layer,
        })
    }

    /// The block at `x` (`[n, c_in, h, w]`) with `temb_act` = SiLU(temb) (`[n, temb]`).
    pub(crate) fn forward(&self, x: &Tensor, temb_act: &Tensor, drop: &Drop) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        let shift = self
            .time_emb_proj
            .forward(temb_act)?
            .unsqueeze(2)?
            .unsqueeze(3)?;
        let mut h = self.norm2.forward(&h.broadcast_add(&shift)?)?.silu()?;
        if let Some((p, key)) = drop {
            h = key.dropout(&h, *p, self.layer)?;
        }
        let h = self.conv2.forward(&h)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        Ok((skip + h)?)
    }
}

/// Self-attention over the h·w positions: GroupNorm, q, k, v and output projections (1×1
/// convolutions, as linear maps of each position's channels), `heads` heads of softmax
/// attention with scale 1/√(channels per head), the input added back. candle-transformers'
/// `AttentionBlock` computes the same with these variable names, but casts q, k and v to f32,
/// so that in f64 the network would be only f32-accurate.
pub(crate) struct Attention {
    group_norm: GroupNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    proj_attn: Linear,
    heads: usize,
}

impl Attention {
    pub(crate) fn new(
        vb: VarBuilder<'_>,
        channels: usize,
        heads: usize,
        groups: usize,
    ) -> Result<Self> {
        Ok(Self {
            group_norm: candle_nn::group_norm(groups, channels, NORM_EPS, vb.pp("group_norm"))?,
            query: candle_nn::linear(channels, channels, vb.pp("query"))?,
            key: candle_nn::linear(channels, channels, vb.pp("key"))?,
            value: candle_nn::linear(channels, channels, vb.pp("value"))?,
            proj_attn: candle_nn::linear(channels, channels, vb.pp("proj_attn"))?,
            heads,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let d = c / self.heads;
        // [n, c, h, w] → [n, h·w, c]: one row of channels per position.
        let xs = self
            .group_norm
            .forward(x)?
            .reshape((n, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        // [n, h·w, c] → [n, heads, h·w, d].
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((n, h * w, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.query.forward(&xs)?)?;
        let k = split(self.key.forward(&xs)?)?;
        let v = split(self.value.forward(&xs)?)?;
        let scores = q
            .matmul(&k.t()?.contiguous()?)?
            .affine(1.0 / (d as f64).sqrt(), 0.0)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, h * w, c))?;
        let out = self
            .proj_attn
            .forward(&out)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, c, h, w))?;
        Ok((out + x)?)
    }
}

/// Nearest-neighbour ×2 upsampling, as a broadcast: its backward is a sum that adds to the
/// input's other gradients (candle 0.11's `upsample_nearest2d` backward overwrites them, and
/// runs a grouped convolution).
pub(crate) fn upsample2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    Ok(x.reshape((n, c, h, 1, w, 1))?
        .broadcast_as((n, c, h, 2, w, 2))?
        .contiguous()?
        .reshape((n, c, 2 * h, 2 * w))?)
}
