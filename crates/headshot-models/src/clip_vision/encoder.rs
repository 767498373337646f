//! The pre-norm transformer stack shared by CLIP's text and vision towers
//! (transformers' `CLIPEncoder`): key names `layers.{i}.{self_attn,layer_norm1,mlp,layer_norm2}`.
//!
//! Owned here rather than taken from candle-transformers because candle's CLIP only knows
//! `quick_gelu` and a fixed LayerNorm epsilon, while the ViT-H/14 image encoder needs the exact
//! (erf) GELU and we want to stop after any layer (FaceID reads `hidden_states[-2]`).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The feed-forward activation named by `hidden_act` in a CLIP config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`: OpenAI's CLIP models (SD1.5 text encoder, ViT-L/14).
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact GELU with erf: OpenCLIP models (ViT-H/14 image encoder).
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU.
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
}

impl Module for Activation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702f64)?)?,
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
        }
    }
}

/// The sizes of one transformer stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncoderDims {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
}

#[derive(Debug, Clone)]
struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl SelfAttention {
    fn load(vb: VarBuilder, dims: &EncoderDims) -> Result<Self> {
        let h = dims.hidden_size;
        if h.checked_rem(dims.num_attention_heads) != Some(0) {
            candle_core::bail!(
                "hidden_size {h} is not divisible by num_attention_heads {}; check the model's config.json",
                dims.num_attention_heads
            );
        }
        let head_dim = h / dims.num_attention_heads;
        Ok(Self {
            q_proj: candle_nn::linear(h, h, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear(h, h, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear(h, h, vb.pp("v_proj"))?,
            out_proj: candle_nn::linear(h, h, vb.pp("out_proj"))?,
            num_heads: dims.num_attention_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// [B, T, H] -> [B*heads, T, head_dim]
    fn split_heads(&self, xs: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        xs.reshape((b, t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b * self.num_heads, t, self.head_dim))
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, h) = xs.dims3()?;
        let q = self.split_heads(&(self.q_proj.forward(xs)? * self.scale)?, b, t)?;
        let k = self.split_heads(&self.k_proj.forward(xs)?, b, t)?;
        let v = self.split_heads(&self.v_proj.forward(xs)?, b, t)?;
        let scores = q.matmul(&k.t()?)?;
        let scores = match mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        // Like transformers, normalise in f32 even when the weights are half precision.
        let in_dtype = scores.dtype();
        let probs =
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(in_dtype)?;
        let out = probs
            .matmul(&v)?
            .reshape((b, self.num_heads, t, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b, t, h))?;
        self.out_proj.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Mlp {
    fn load(vb: VarBuilder, dims: &EncoderDims) -> Result<Self> {
        Ok(Self {
            fc1: candle_nn::linear(dims.hidden_size, dims.intermediate_size, vb.pp("fc1"))?,
            fc2: candle_nn::linear(dims.intermediate_size, dims.hidden_size, vb.pp("fc2"))?,
            activation: dims.activation,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward(&self.activation.forward(&self.fc1.forward(xs)?)?)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn load(vb: VarBuilder, dims: &EncoderDims) -> Result<Self> {
        let h = dims.hidden_size;
        Ok(Self {
            layer_norm1: candle_nn::layer_norm(h, dims.layer_norm_eps, vb.pp("layer_norm1"))?,
            self_attn: SelfAttention::load(vb.pp("self_attn"), dims)?,
            layer_norm2: candle_nn::layer_norm(h, dims.layer_norm_eps, vb.pp("layer_norm2"))?,
            mlp: Mlp::load(vb.pp("mlp"), dims)?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, mask)?;
        let xs = (xs + attn)?;
        let mlp = self.mlp.forward(&self.layer_norm2.forward(&xs)?)?;
        xs + mlp
    }
}

/// A run of `encoder.layers.{i}` (read under their real indices).
#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// Loads layers `0..num_layers`.
    pub fn load(vb: VarBuilder, dims: &EncoderDims, num_layers: usize) -> Result<Self> {
        Self::load_range(vb, dims, 0..num_layers)
    }

    /// Loads layers `range` only, e.g. the last one of a tower split in two.
    pub fn load_range(
        vb: VarBuilder,
        dims: &EncoderDims,
        range: std::ops::Range<usize>,
    ) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = range
            .map(|i| EncoderLayer::load(vb.pp(i), dims))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Runs every loaded layer; `mask` is added to the attention scores ([T, T] or broadcastable).
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_first(xs, mask, self.layers.len())
    }

    /// Runs the first `count` loaded layers only.
    pub fn forward_first(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        count: usize,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for layer in self.layers.iter().take(count) {
            xs = layer.forward(&xs, mask)?;
        }
        Ok(xs)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

/// Softmax-additive causal mask [T, T]: 0 on and below the diagonal, -inf above.
pub(crate) fn causal_mask(t: usize, dtype: DType, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)?.to_dtype(dtype)
}
