//! The config files of the set, written with the keys of the real ones (SD1.5's unet/vae configs
//! from diffusers 0.6 / sd-vae-ft-mse, transformers' CLIP configs, SD1.5's scheduler and
//! feature-extractor files verbatim).

use serde_json::{json, Value};

use super::dims::*;

pub fn unet(d: &Dims) -> Value {
    json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.6.0",
        "act_fn": "silu",
        "attention_head_dim": d.unet_heads,
        "block_out_channels": d.unet_channels,
        "center_input_sample": false,
        "cross_attention_dim": d.cross_dim,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": d.unet_groups,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    })
}

/// sd-vae-ft-mse's minimal config (no scaling_factor: diffusers' default 0.18215 applies).
pub fn vae(d: &Dims) -> Value {
    json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.4.2",
        "act_fn": "silu",
        "block_out_channels": d.vae_channels,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": d.vae_groups,
        "out_channels": 3,
        "sample_size": 512,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
    })
}

fn torch_dtype(f16: bool) -> &'static str {
    if f16 {
        "float16"
    } else {
        "float32"
    }
}

pub fn text_encoder(d: &Dims, f16: bool) -> Value {
    json!({
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": d.cross_dim,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": d.text_ffn,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": TEXT_POSITIONS,
        "model_type": "clip_text_model",
        "num_attention_heads": d.text_heads,
        "num_hidden_layers": d.text_layers,
        "pad_token_id": 1,
        "projection_dim": d.cross_dim,
        "torch_dtype": torch_dtype(f16),
        "vocab_size": VOCAB
    })
}

pub fn image_encoder(d: &Dims, f16: bool) -> Value {
    json!({
        "architectures": ["CLIPVisionModelWithProjection"],
        "attention_dropout": 0.0,
        "hidden_act": "gelu",
        "hidden_size": d.vision_hidden,
        "image_size": IMAGE_SIZE,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": d.vision_ffn,
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_attention_heads": d.vision_heads,
        "num_channels": 3,
        "num_hidden_layers": d.vision_layers,
        "patch_size": PATCH,
        "projection_dim": d.vision_proj,
        "torch_dtype": torch_dtype(f16)
    })
}

pub fn safety_checker(d: &Dims, f16: bool) -> Value {
    json!({
        "architectures": ["StableDiffusionSafetyChecker"],
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": d.safety_proj,
        "text_config": {
            "hidden_act": "quick_gelu",
            "hidden_size": d.safety_proj,
            "intermediate_size": 4 * d.safety_proj,
            "max_position_embeddings": TEXT_POSITIONS,
            "model_type": "clip_text_model",
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "vocab_size": VOCAB
        },
        "torch_dtype": torch_dtype(f16),
        "vision_config": {
            "hidden_act": "quick_gelu",
            "hidden_size": d.safety_hidden,
            "image_size": IMAGE_SIZE,
            "intermediate_size": d.safety_ffn,
            "layer_norm_eps": 1e-05,
            "model_type": "clip_vision_model",
            "num_attention_heads": d.safety_heads,
            "num_channels": 3,
            "num_hidden_layers": d.safety_layers,
            "patch_size": PATCH
        }
    })
}

pub fn scheduler() -> Value {
    json!({
        "_class_name": "PNDMScheduler",
        "_diffusers_version": "0.6.0",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "trained_betas": null,
        "clip_sample": false
    })
}

pub fn feature_extractor() -> Value {
    json!({
        "crop_size": 224,
        "do_center_crop": true,
        "do_convert_rgb": true,
        "do_normalize": true,
        "do_resize": true,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "size": 224
    })
}

pub fn model_index() -> Value {
    json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.6.0",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    })
}
