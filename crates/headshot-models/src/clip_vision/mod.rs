//! CLIP vision transformer (transformers' `CLIPVisionTransformer`).
//!
//! Used twice: the IP-Adapter FaceID image encoder (ViT-H/14, exact GELU) reads
//! `hidden_states[-2]`, and the safety checker (ViT-L/14, quick_gelu) reads the pooled output.
//! Weight names are those under `vision_model.` in a `CLIPVisionModelWithProjection` file
//! (`embeddings.*`, `pre_layrnorm.*` – transformers' spelling –, `encoder.layers.*`,
//! `post_layernorm.*`); hand `load` a `VarBuilder` already at that prefix.

pub(crate) mod encoder;

use std::path::{Path, PathBuf};

use candle_core::{IndexOp, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, VarBuilder};
use serde::Deserialize;

pub use encoder::Activation;
use encoder::{Encoder, EncoderDims};

/// Errors while reading a CLIP `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum ClipConfigError {
    #[error("cannot read CLIP config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CLIP config {path} is not a valid CLIP(Vision|Text)Config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("CLIP config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub(crate) fn read_config_file(path: &Path) -> std::result::Result<String, ClipConfigError> {
    std::fs::read_to_string(path).map_err(|source| ClipConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The `key` part of a full `CLIPConfig` (`vision_config` / `text_config`), with the legacy
/// `{key}_dict` entries of older config files merged over it as transformers does; a config that
/// is already a tower config is returned unchanged.
pub(crate) fn sub_config(value: serde_json::Value, key: &str) -> serde_json::Value {
    let legacy = value
        .get(format!("{key}_dict"))
        .and_then(|v| v.as_object())
        .cloned();
    let current = value.get(key).and_then(|v| v.as_object()).cloned();
    if legacy.is_none() && current.is_none() {
        return value;
    }
    let mut merged = current.unwrap_or_default();
    merged.extend(legacy.unwrap_or_default());
    serde_json::Value::Object(merged)
}

/// The vision part of a CLIP config; missing keys take transformers' `CLIPVisionConfig` defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipVisionConfig {
    /// ViT-H/14 as in `laion/CLIP-ViT-H-14-laion2B-s32B-b79K` (the FaceID image encoder).
    pub fn vit_h_14() -> Self {
        Self {
            hidden_size: 1280,
            intermediate_size: 5120,
            projection_dim: 1024,
            num_hidden_layers: 32,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 224,
            patch_size: 14,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-5,
        }
    }

    /// Parses either a vision config (`CLIPVisionModelWithProjection`'s config.json) or a full
    /// `CLIPConfig` (the safety checker's), whose vision part sits under `vision_config`.
    pub fn from_json_str(json: &str, origin: &Path) -> std::result::Result<Self, ClipConfigError> {
        let parse_err = |source| ClipConfigError::Parse {
            path: origin.to_path_buf(),
            source,
        };
        let value: serde_json::Value = serde_json::from_str(json).map_err(parse_err)?;
        let vision = sub_config(value, "vision_config");
        let config: Self = serde_json::from_value(vision).map_err(parse_err)?;
        config.validate(origin)?;
        Ok(config)
    }

    pub fn from_file(path: impl AsRef<Path>) -> std::result::Result<Self, ClipConfigError> {
        let path = path.as_ref();
        Self::from_json_str(&read_config_file(path)?, path)
    }

    fn validate(&self, origin: &Path) -> std::result::Result<(), ClipConfigError> {
        let invalid = |message: String| ClipConfigError::Invalid {
            path: origin.to_path_buf(),
            message,
        };
        if self.hidden_size.checked_rem(self.num_attention_heads) != Some(0) {
            return Err(invalid(format!(
                "hidden_size {} must be a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.image_size.checked_rem(self.patch_size) != Some(0) {
            return Err(invalid(format!(
                "image_size {} must be a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if self.num_hidden_layers < 2 {
            return Err(invalid(
                "num_hidden_layers must be at least 2 (hidden_states[-2] is read)".into(),
            ));
        }
        Ok(())
    }

    /// Number of tokens: one per patch plus the class token (257 for 224 px, patch 14).
    pub fn num_positions(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + 1
    }

    fn encoder_dims(&self) -> EncoderDims {
        EncoderDims {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_attention_heads: self.num_attention_heads,
            layer_norm_eps: self.layer_norm_eps,
            activation: self.hidden_act,
        }
    }
}

/// Which outputs a loaded tower must be able to produce; decides which weights are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipVisionOutputs {
    /// `hidden_states[-2]` and the pooled output: every layer and `post_layernorm`.
    All,
    /// Only `hidden_states[-2]`: the last layer and `post_layernorm` are neither loaded nor run.
    PenultimateOnly,
}

#[derive(Debug, Clone)]
struct VisionEmbeddings {
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
}

impl VisionEmbeddings {
    fn load(vb: VarBuilder, cfg: &ClipVisionConfig) -> Result<Self> {
        let conv_cfg = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        Ok(Self {
            patch_embedding: candle_nn::conv2d_no_bias(
                cfg.num_channels,
                cfg.hidden_size,
                cfg.patch_size,
                conv_cfg,
                vb.pp("patch_embedding"),
            )?,
            class_embedding: vb.get(cfg.hidden_size, "class_embedding")?,
            position_embedding: vb.get(
                (cfg.num_positions(), cfg.hidden_size),
                "position_embedding.weight",
            )?,
        })
    }

    /// [B, C, S, S] -> [B, 1 + patches, H]
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let patches = self
            .patch_embedding
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let h = self.class_embedding.dim(0)?;
        let class = self
            .class_embedding
            .reshape((1, 1, h))?
            .broadcast_as((b, 1, h))?;
        Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.position_embedding.unsqueeze(0)?)
    }
}

/// CLIP's vision transformer, loaded from the weights under `vision_model.`.
#[derive(Debug, Clone)]
pub struct ClipVisionTransformer {
    embeddings: VisionEmbeddings,
    pre_layrnorm: LayerNorm,
    /// All layers but the last: their output is `hidden_states[-2]`.
    leading_layers: Encoder,
    /// The last layer and `post_layernorm`, when pooled outputs were asked for.
    pooling: Option<(Encoder, LayerNorm)>,
    config: ClipVisionConfig,
}

impl ClipVisionTransformer {
    /// Loads every layer (both outputs available).
    pub fn load(vb: VarBuilder, cfg: &ClipVisionConfig) -> Result<Self> {
        Self::load_for(vb, cfg, ClipVisionOutputs::All)
    }

    /// Loads from `vb` at the root of a `CLIPVisionModelWithProjection` (or `CLIPVisionModel`)
    /// file in any layout of `weight_layout::CLIP_VISION_WITH_PROJECTION`.
    pub fn load_from_model_file(
        vb: VarBuilder,
        cfg: &ClipVisionConfig,
        outputs: ClipVisionOutputs,
    ) -> Result<Self> {
        crate::weight_layout::CLIP_VISION_WITH_PROJECTION
            .load(&vb, |vb| Self::load_for(vb, cfg, outputs))
    }

    /// Loads only the weights the chosen outputs need.
    pub fn load_for(
        vb: VarBuilder,
        cfg: &ClipVisionConfig,
        outputs: ClipVisionOutputs,
    ) -> Result<Self> {
        if cfg.num_hidden_layers < 2 {
            candle_core::bail!(
                "a CLIP vision tower needs at least 2 layers, config has {}",
                cfg.num_hidden_layers
            );
        }
        let dims = cfg.encoder_dims();
        let embeddings = VisionEmbeddings::load(vb.pp("embeddings"), cfg)?;
        let pre_layrnorm =
            candle_nn::layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("pre_layrnorm"))?;
        let last = cfg.num_hidden_layers - 1;
        let leading_layers = Encoder::load(vb.pp("encoder"), &dims, last)?;
        let pooling = match outputs {
            ClipVisionOutputs::PenultimateOnly => None,
            ClipVisionOutputs::All => {
                // The last layer alone, read from its real index.
                let last_layer = Encoder::load_range(vb.pp("encoder"), &dims, last..last + 1)?;
                let post = candle_nn::layer_norm(
                    cfg.hidden_size,
                    cfg.layer_norm_eps,
                    vb.pp("post_layernorm"),
                )?;
                Some((last_layer, post))
            }
        };
        tracing::debug!(
            layers = cfg.num_hidden_layers,
            hidden = cfg.hidden_size,
            pooled = pooling.is_some(),
            "loaded CLIP vision transformer"
        );
        Ok(Self {
            embeddings,
            pre_layrnorm,
            leading_layers,
            pooling,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ClipVisionConfig {
        &self.config
    }

    fn check_pixels(&self, pixels: &Tensor) -> Result<()> {
        let (_, c, h, w) = pixels.dims4()?;
        let cfg = &self.config;
        if c != cfg.num_channels || h != cfg.image_size || w != cfg.image_size {
            candle_core::bail!(
                "CLIP vision expects pixels [B, {}, {}, {}], got {:?}",
                cfg.num_channels,
                cfg.image_size,
                cfg.image_size,
                pixels.dims()
            );
        }
        Ok(())
    }

    /// `hidden_states[-2]`: output of layer L-1 of L, without `post_layernorm`. [B, 257, H]
    pub fn penultimate_hidden_states(&self, pixels: &Tensor) -> Result<Tensor> {
        self.check_pixels(pixels)?;
        let xs = self
            .pre_layrnorm
            .forward(&self.embeddings.forward(pixels)?)?;
        self.leading_layers.forward(&xs, None)
    }

    /// `post_layernorm` of the class token of the last layer (transformers' `pooler_output`). [B, H]
    pub fn pooled_output(&self, pixels: &Tensor) -> Result<Tensor> {
        let Some((last_layer, post_layernorm)) = &self.pooling else {
            candle_core::bail!("this CLIP vision tower was loaded without its last layer; load it with ClipVisionOutputs::All for pooled outputs")
        };
        let xs = self.penultimate_hidden_states(pixels)?;
        let xs = last_layer.forward(&xs, None)?;
        post_layernorm.forward(&xs.i((.., 0, ..))?)
    }
}
