//! SD1.5 text encoder: transformers' `CLIPTextModel` (weights under `text_model.` in
//! `text_encoder/model.safetensors` as transformers 4.x writes it, at the root as 5.x does; see
//! `weight_layout`). The pipeline conditions on `last_hidden_state`, i.e. the
//! output of `final_layer_norm`, computed with CLIP's causal attention mask.

use std::path::Path;

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use crate::clip_vision::encoder::{causal_mask, Activation, Encoder, EncoderDims};
pub use crate::clip_vision::ClipConfigError;

/// `text_encoder/config.json` (a `CLIPTextConfig`, or a `CLIPConfig` with `text_config`);
/// missing keys take transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipTextConfig {
    /// SD1.5's text encoder (`openai/clip-vit-large-patch14` text tower).
    pub fn sd15() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    pub fn from_json_str(json: &str, origin: &Path) -> std::result::Result<Self, ClipConfigError> {
        let parse_err = |source| ClipConfigError::Parse {
            path: origin.to_path_buf(),
            source,
        };
        let value: serde_json::Value = serde_json::from_str(json).map_err(parse_err)?;
        let text = crate::clip_vision::sub_config(value, "text_config");
        let config: Self = serde_json::from_value(text).map_err(parse_err)?;
        if config.hidden_size.checked_rem(config.num_attention_heads) != Some(0) {
            return Err(ClipConfigError::Invalid {
                path: origin.to_path_buf(),
                message: format!(
                    "hidden_size {} must be a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            });
        }
        Ok(config)
    }

    pub fn from_file(path: impl AsRef<Path>) -> std::result::Result<Self, ClipConfigError> {
        let path = path.as_ref();
        Self::from_json_str(&crate::clip_vision::read_config_file(path)?, path)
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

/// The CLIP text transformer.
#[derive(Debug, Clone)]
pub struct ClipTextEncoder {
    token_embedding: Embedding,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    config: ClipTextConfig,
}

impl ClipTextEncoder {
    /// `vb` at the root of the text encoder file, in any layout of `weight_layout::CLIP_TEXT_MODEL`.
    pub fn load(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        crate::weight_layout::CLIP_TEXT_MODEL.load(&vb, |vb| Self::load_at(vb, cfg))
    }

    /// `vb` at the text transformer's own prefix.
    fn load_at(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        let emb = vb.pp("embeddings");
        let token_embedding =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, emb.pp("token_embedding"))?;
        let position_embedding = emb.get(
            (cfg.max_position_embeddings, cfg.hidden_size),
            "position_embedding.weight",
        )?;
        let encoder = Encoder::load(vb.pp("encoder"), &cfg.encoder_dims(), cfg.num_hidden_layers)?;
        let final_layer_norm = candle_nn::layer_norm(
            cfg.hidden_size,
            cfg.layer_norm_eps,
            vb.pp("final_layer_norm"),
        )?;
        tracing::debug!(
            layers = cfg.num_hidden_layers,
            hidden = cfg.hidden_size,
            "loaded CLIP text encoder"
        );
        Ok(Self {
            token_embedding,
            position_embedding,
            encoder,
            final_layer_norm,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// `last_hidden_state` for token ids [B, T] (u32, T <= max_position_embeddings): [B, T, D].
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.forward_clip_skip(input_ids, 1)
    }

    /// The prompt embeddings under A1111's CLIP skip: 1 is `last_hidden_state`; 2 the output
    /// of the layer before the last, through `final_layer_norm` all the same (diffusers'
    /// `clip_skip = clip_skip - 1`: `hidden_states[-(k + 1)]` then the final norm).
    pub fn forward_clip_skip(&self, input_ids: &Tensor, clip_skip: usize) -> Result<Tensor> {
        let layers = self.encoder.num_layers();
        if clip_skip == 0 || clip_skip > layers {
            candle_core::bail!(
                "clip skip {clip_skip} is outside 1..={layers} (the encoder's layers)"
            );
        }
        let (_, t) = input_ids.dims2()?;
        if t > self.config.max_position_embeddings {
            candle_core::bail!(
                "{t} tokens exceed the text encoder's max_position_embeddings {}; tokenize with truncation",
                self.config.max_position_embeddings
            );
        }
        let positions = self.position_embedding.narrow(0, 0, t)?;
        let xs = self
            .token_embedding
            .forward(input_ids)?
            .broadcast_add(&positions)?;
        let mask = causal_mask(t, xs.dtype(), xs.device())?;
        let xs = self
            .encoder
            .forward_first(&xs, Some(&mask), layers + 1 - clip_skip)?;
        self.final_layer_norm.forward(&xs)
    }
}
