//! IP-Adapter FaceID-Plus image projection (tencent-ailab's `ProjPlusModel` with its
//! `FacePerceiverResampler`; diffusers' `IPAdapterFaceIDPlusImageProjection`), over the
//! adapter file's `image_proj` tensors in h94's original key layout:
//!
//! - `proj.0` Linear(id -> hidden), exact GELU, `proj.2` Linear(hidden -> tokens·D), reshape
//!   [B, tokens, D], `norm` LayerNorm(D): the id tokens `x`;
//! - `perceiver_resampler.proj_in` Linear(clip -> D) on the CLIP features, then per layer i
//!   `latents += attn(norm1(clip), norm2(latents))` (`layers.i.0.*`) and
//!   `latents += ff(latents)` (`layers.i.1.{0,1,3}`), then `proj_out`, `norm_out`;
//! - PlusV2 shortcut: `out = x + s_scale · resampler(x, clip)`.
//!
//! All sizes are read from the tensor shapes (as diffusers' converter does), with the attention
//! head size fixed at 64 like both reference implementations.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};

/// Head size of the perceiver attention; both references hard-code it.
pub const PERCEIVER_HEAD_DIM: usize = 64;

/// LayerNorm epsilon (torch's default; the references do not override it).
const LAYER_NORM_EPS: f64 = 1e-5;

/// Errors while deriving the projection's sizes from the adapter's `image_proj` tensors.
#[derive(Debug, thiserror::Error)]
pub enum FaceProjectionError {
    #[error("the adapter's image_proj has no tensor `{name}`; is this an IP-Adapter FaceID-Plus(V2) file (e.g. ip-adapter-faceid-plusv2_sd15.bin)?")]
    MissingTensor { name: String },
    #[error("image_proj tensor `{name}` has shape {got:?}, expected {expected}")]
    BadShape {
        name: String,
        got: Vec<usize>,
        expected: String,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Sizes of a FaceID-Plus projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaceIdPlusConfig {
    /// ArcFace embedding size (512).
    pub id_embedding_dim: usize,
    /// Hidden size of the id MLP (`proj.0` output, 1024).
    pub id_hidden_dim: usize,
    /// Number of id tokens (4).
    pub num_tokens: usize,
    /// Token width inside the resampler (`cross_attention_dim`, 768 for SD1.5).
    pub embed_dim: usize,
    /// CLIP feature width (1280 for ViT-H/14).
    pub clip_embedding_dim: usize,
    /// Output width (`proj_out`, = the UNet's cross-attention dim).
    pub output_dim: usize,
    /// Number of perceiver layers (4).
    pub depth: usize,
    /// Attention heads (embed_dim / 64 = 12 for SD1.5).
    pub heads: usize,
    /// Feed-forward hidden size (4 · embed_dim).
    pub ff_inner_dim: usize,
}

impl FaceIdPlusConfig {
    /// The real `ip-adapter-faceid-plusv2_sd15.bin` sizes.
    pub fn sd15() -> Self {
        Self {
            id_embedding_dim: 512,
            id_hidden_dim: 1024,
            num_tokens: 4,
            embed_dim: 768,
            clip_embedding_dim: 1280,
            output_dim: 768,
            depth: 4,
            heads: 12,
            ff_inner_dim: 3072,
        }
    }

    /// Reads the sizes off the tensors under `vb` (a builder over the `image_proj` dict).
    pub fn from_weights(vb: &VarBuilder) -> std::result::Result<Self, FaceProjectionError> {
        let shape = |name: &str| -> std::result::Result<Vec<usize>, FaceProjectionError> {
            if !vb.contains_tensor(name) {
                return Err(FaceProjectionError::MissingTensor {
                    name: name.to_string(),
                });
            }
            Ok(vb.get_unchecked(name)?.dims().to_vec())
        };
        let matrix = |name: &str| -> std::result::Result<(usize, usize), FaceProjectionError> {
            match shape(name)?.as_slice() {
                &[rows, cols] => Ok((rows, cols)),
                other => Err(FaceProjectionError::BadShape {
                    name: name.to_string(),
                    got: other.to_vec(),
                    expected: "a 2-d [out, in] Linear weight".into(),
                }),
            }
        };
        let (id_hidden_dim, id_embedding_dim) = matrix("proj.0.weight")?;
        let (proj2_rows, _) = matrix("proj.2.weight")?;
        let (embed_dim, clip_embedding_dim) = matrix("perceiver_resampler.proj_in.weight")?;
        let (output_dim, _) = matrix("perceiver_resampler.proj_out.weight")?;
        let (inner_dim, _) = matrix("perceiver_resampler.layers.0.0.to_q.weight")?;
        let (ff_inner_dim, _) = matrix("perceiver_resampler.layers.0.1.1.weight")?;
        if embed_dim == 0 || proj2_rows % embed_dim != 0 {
            return Err(FaceProjectionError::BadShape {
                name: "proj.2.weight".into(),
                got: vec![proj2_rows],
                expected: format!("rows a multiple of the token width {embed_dim}"),
            });
        }
        if inner_dim == 0 || inner_dim % PERCEIVER_HEAD_DIM != 0 {
            return Err(FaceProjectionError::BadShape {
                name: "perceiver_resampler.layers.0.0.to_q.weight".into(),
                got: vec![inner_dim, embed_dim],
                expected: format!("rows a multiple of the head size {PERCEIVER_HEAD_DIM}"),
            });
        }
        let depth = (0..)
            .take_while(|i| {
                vb.contains_tensor(&format!("perceiver_resampler.layers.{i}.0.to_q.weight"))
            })
            .count();
        Ok(Self {
            id_embedding_dim,
            id_hidden_dim,
            num_tokens: proj2_rows / embed_dim,
            embed_dim,
            clip_embedding_dim,
            output_dim,
            depth,
            heads: inner_dim / PERCEIVER_HEAD_DIM,
            ff_inner_dim,
        })
    }
}

/// `layers.i.0`: cross-attention from the latents to [clip features; latents].
#[derive(Debug, Clone)]
struct PerceiverAttention {
    norm1: LayerNorm,
    norm2: LayerNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl PerceiverAttention {
    fn load(vb: VarBuilder, cfg: &FaceIdPlusConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        let inner = cfg.heads * PERCEIVER_HEAD_DIM;
        // to_kv holds K then V stacked along the output rows; split once at load.
        let to_kv = vb.get((2 * inner, d), "to_kv.weight")?;
        Ok(Self {
            norm1: candle_nn::layer_norm(d, LAYER_NORM_EPS, vb.pp("norm1"))?,
            norm2: candle_nn::layer_norm(d, LAYER_NORM_EPS, vb.pp("norm2"))?,
            to_q: candle_nn::linear_no_bias(d, inner, vb.pp("to_q"))?,
            to_k: Linear::new(to_kv.narrow(0, 0, inner)?.contiguous()?, None),
            to_v: Linear::new(to_kv.narrow(0, inner, inner)?.contiguous()?, None),
            to_out: candle_nn::linear_no_bias(inner, d, vb.pp("to_out"))?,
            heads: cfg.heads,
        })
    }

    /// [B, T, inner] -> [B·heads, T, 64]
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        xs.reshape((b, t, self.heads, PERCEIVER_HEAD_DIM))?
            .transpose(1, 2)?
            .reshape((b * self.heads, t, PERCEIVER_HEAD_DIM))
    }

    fn forward(&self, clip: &Tensor, latents: &Tensor) -> Result<Tensor> {
        let clip = self.norm1.forward(clip)?;
        let latents = self.norm2.forward(latents)?;
        let (b, n, _) = latents.dims3()?;
        let context = Tensor::cat(&[&clip, &latents], 1)?;
        // Scaling q and k by 64^-0.25 each (as the reference) keeps f16 products in range.
        let scale = (PERCEIVER_HEAD_DIM as f64).powf(-0.25);
        let q = self.split_heads(&(self.to_q.forward(&latents)? * scale)?)?;
        let k = self.split_heads(&(self.to_k.forward(&context)? * scale)?)?;
        let v = self.split_heads(&self.to_v.forward(&context)?)?;
        let scores = q.matmul(&k.t()?)?;
        let in_dtype = scores.dtype();
        let probs =
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(in_dtype)?;
        let out = probs
            .matmul(&v)?
            .reshape((b, self.heads, n, PERCEIVER_HEAD_DIM))?
            .transpose(1, 2)?
            .reshape((b, n, self.heads * PERCEIVER_HEAD_DIM))?;
        self.to_out.forward(&out)
    }
}

/// `layers.i.1`: LayerNorm, Linear, GELU, Linear (no biases).
#[derive(Debug, Clone)]
struct FeedForward {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl FeedForward {
    fn load(vb: VarBuilder, cfg: &FaceIdPlusConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        Ok(Self {
            norm: candle_nn::layer_norm(d, LAYER_NORM_EPS, vb.pp("0"))?,
            fc1: candle_nn::linear_no_bias(d, cfg.ff_inner_dim, vb.pp("1"))?,
            fc2: candle_nn::linear_no_bias(cfg.ff_inner_dim, d, vb.pp("3"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward(&self.fc1.forward(&self.norm.forward(xs)?)?.gelu_erf()?)
    }
}

/// The FaceID-Plus projection: id embedding + CLIP features -> id tokens for the UNet.
#[derive(Debug, Clone)]
pub struct FaceIdPlusProjection {
    proj_0: Linear,
    proj_2: Linear,
    norm: LayerNorm,
    proj_in: Linear,
    layers: Vec<(PerceiverAttention, FeedForward)>,
    proj_out: Linear,
    norm_out: LayerNorm,
    config: FaceIdPlusConfig,
}

impl FaceIdPlusProjection {
    /// `vb` over the adapter's `image_proj` tensors (keys `proj.0.weight`, `perceiver_resampler.*`).
    pub fn load(vb: VarBuilder, cfg: &FaceIdPlusConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        let resampler = vb.pp("perceiver_resampler");
        let layers = (0..cfg.depth)
            .map(|i| {
                let layer = resampler.pp("layers").pp(i);
                Ok((
                    PerceiverAttention::load(layer.pp("0"), cfg)?,
                    FeedForward::load(layer.pp("1"), cfg)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let projection = Self {
            proj_0: candle_nn::linear(cfg.id_embedding_dim, cfg.id_hidden_dim, vb.pp("proj.0"))?,
            proj_2: candle_nn::linear(cfg.id_hidden_dim, cfg.num_tokens * d, vb.pp("proj.2"))?,
            norm: candle_nn::layer_norm(d, LAYER_NORM_EPS, vb.pp("norm"))?,
            proj_in: candle_nn::linear(cfg.clip_embedding_dim, d, resampler.pp("proj_in"))?,
            layers,
            proj_out: candle_nn::linear(d, cfg.output_dim, resampler.pp("proj_out"))?,
            norm_out: candle_nn::layer_norm(
                cfg.output_dim,
                LAYER_NORM_EPS,
                resampler.pp("norm_out"),
            )?,
            config: *cfg,
        };
        tracing::debug!(?cfg, "loaded FaceID-Plus projection");
        Ok(projection)
    }

    /// Derives the sizes from the tensors under `vb`, then loads.
    pub fn load_inferred(vb: VarBuilder) -> std::result::Result<Self, FaceProjectionError> {
        let cfg = FaceIdPlusConfig::from_weights(&vb)?;
        Ok(Self::load(vb, &cfg)?)
    }

    pub fn config(&self) -> &FaceIdPlusConfig {
        &self.config
    }

    /// The two halves before the shortcut: `x` (normalised id tokens) and the resampler output,
    /// both [B, tokens, D]. Lets a caller combine them for several `s_scale` values.
    pub fn forward_parts(
        &self,
        id_embeds: &Tensor,
        clip_features: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let cfg = &self.config;
        let (b, id_dim) = id_embeds.dims2()?;
        let (cb, _, clip_dim) = clip_features.dims3()?;
        if id_dim != cfg.id_embedding_dim || clip_dim != cfg.clip_embedding_dim || cb != b {
            candle_core::bail!(
                "FaceID projection expects id embeddings [B, {}] and CLIP features [B, N, {}], got {:?} and {:?}",
                cfg.id_embedding_dim,
                cfg.clip_embedding_dim,
                id_embeds.dims(),
                clip_features.dims()
            );
        }
        let hidden = self.proj_0.forward(id_embeds)?.gelu_erf()?;
        let x = self
            .proj_2
            .forward(&hidden)?
            .reshape((b, cfg.num_tokens, cfg.embed_dim))?
            .apply(&self.norm)?;
        let clip = self.proj_in.forward(clip_features)?;
        let mut latents = x.clone();
        for (attn, ff) in &self.layers {
            latents = (attn.forward(&clip, &latents)? + &latents)?;
            latents = (ff.forward(&latents)? + &latents)?;
        }
        let resampled = self.norm_out.forward(&self.proj_out.forward(&latents)?)?;
        Ok((x, resampled))
    }

    /// PlusV2: `x + s_scale · resampler(x, clip)` -> [B, tokens, output_dim].
    /// `id_embeds` [B, 512] (ArcFace, L2-normalised), `clip_features` [B, 257, 1280]
    /// (`hidden_states[-2]` of the image encoder).
    pub fn forward(
        &self,
        id_embeds: &Tensor,
        clip_features: &Tensor,
        s_scale: f64,
    ) -> Result<Tensor> {
        let (x, resampled) = self.forward_parts(id_embeds, clip_features)?;
        if x.dim(D::Minus1)? != resampled.dim(D::Minus1)? {
            candle_core::bail!(
                "the s_scale shortcut needs proj_out width {} to equal the token width {}",
                resampled.dim(D::Minus1)?,
                x.dim(D::Minus1)?
            );
        }
        x + (resampled * s_scale)?
    }
}
