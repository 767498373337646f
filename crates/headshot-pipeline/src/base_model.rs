//! The part of a model set in which SD1.5 fine-tunes differ: tokenizer, text encoder, UNet (the
//! FaceID adapter attached, its LoRA fused), VAE decoder and scheduler config. The default
//! set's is loaded with the pipeline; the sets a job picks by `model_id` are loaded on demand
//! (`model_sets.rs`). The face models, image encoder, projection and safety checker are the
//! same for every SD1.5 base and stay on the pipeline, loaded once.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use headshot_models::clip_text::{ClipTextConfig, ClipTextEncoder};
use headshot_models::ddim::DdimScheduler;
use headshot_models::ip_adapter::IpAdapterWeights;
use headshot_models::lora::LoraTargets;
use headshot_models::recorded_weights::record;
use headshot_models::tokenizer::ClipTokenizer;
use headshot_models::unet::{IpAdapterAttachment, UNet2DConditionModel, UNetConfig};
use headshot_models::vae::{VaeConfig, VaeDecoder};
use headshot_weights::single_file::{PartLayout, SingleFile};
use headshot_weights::{ComponentKind, ResolvedModelSet};

use crate::error::PipelineError;
use crate::load::{folder_of, load_part, read_text, timed, unet_layout};
use crate::loras::LoraSupport;

/// One base model, loaded on one device.
pub(crate) struct BaseModel {
    /// The model set's name (its manifest's `name`), for logs.
    pub name: String,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextEncoder,
    pub unet: UNet2DConditionModel,
    pub vae: VaeDecoder,
    pub vae_scaling_factor: f64,
    /// Pixels per latent cell (2^(VAE blocks - 1), 8 for SD1.5).
    pub vae_scale_factor: usize,
    /// The scheduler_config.json text; each batch builds its job's sampler from it.
    pub scheduler_config: String,
    /// What merging a user LoRA set into this base needs, and the last set merged.
    pub loras: LoraSupport,
    /// The memory its weights hold (the recorded tensors of UNet, text encoder and VAE).
    pub bytes: u64,
}

/// What a base model is loaded with, besides its own files.
pub(crate) struct BaseLoad<'a> {
    /// The FaceID adapter: its attention weights and LoRA go into every UNet.
    pub adapter: &'a IpAdapterWeights,
    pub num_tokens: usize,
    pub adapter_scale: f64,
    pub dtype: DType,
    pub device: &'a Device,
}

impl BaseModel {
    /// Loads the base parts of `set`: from their own folders' weights, or from the set's
    /// single-file checkpoint for those whose component lists only a config.
    pub fn load(set: &ResolvedModelSet, with: &BaseLoad<'_>) -> Result<BaseModel, PipelineError> {
        let start = Instant::now();
        let (dtype, device) = (with.dtype, with.device);
        let checkpoint = match set.optional(ComponentKind::Checkpoint) {
            Some(c) => Some(Arc::new(timed("single-file checkpoint index", || {
                let path = c.weights()?[0];
                SingleFile::open(path).map_err(PipelineError::load(c.kind, path))
            })?)),
            None => None,
        };
        let checkpoint = checkpoint.as_ref();

        let tokenizer = timed("tokenizer", || {
            let c = set.get(ComponentKind::Tokenizer)?;
            let dir = folder_of(c, "vocab.json").or_else(|_| folder_of(c, "tokenizer.json"))?;
            ClipTokenizer::from_folder(&dir).map_err(PipelineError::load(c.kind, &dir))
        })?;

        let (text_encoder, text_weights) = timed("text encoder", || {
            let c = set.get(ComponentKind::TextEncoder)?;
            let cfg_path = c.file("config.json")?;
            let cfg = ClipTextConfig::from_file(cfg_path)
                .map_err(PipelineError::load(c.kind, cfg_path))?;
            // Recorded: a LoRA set rebuilds the encoder from these tensors (see loras.rs).
            let layout = PartLayout::TextEncoder;
            load_part(c, checkpoint, layout, dtype, device, cfg_path, |vb| {
                let (vb, recording) = record(vb);
                let encoder = ClipTextEncoder::load(vb, &cfg)?;
                Ok::<_, candle_core::Error>((encoder, recording.finish()))
            })
        })?;

        let (unet, unet_weights) = timed("UNet (fusing the adapter's LoRA)", || {
            let c = set.get(ComponentKind::Unet)?;
            let cfg_path = c.file("config.json")?;
            let cfg =
                UNetConfig::from_file(cfg_path).map_err(PipelineError::load(c.kind, cfg_path))?;
            let attachment = IpAdapterAttachment {
                weights: with.adapter,
                num_tokens: with.num_tokens,
                scale: with.adapter_scale,
            };
            // The UNet's base weights stay for users' LoRAs: a LoRA set rebuilds the UNet
            // from them (shared tensors, see loras.rs).
            let layout = unet_layout(&cfg);
            load_part(c, checkpoint, layout, dtype, device, cfg_path, |vb| {
                let (vb, recording) = record(vb);
                let unet = UNet2DConditionModel::load(vb, &cfg, Some(attachment))?;
                Ok::<_, crate::error::Cause>((unet, recording.finish()))
            })
        })?;

        let (vae, vae_weights, vae_scaling_factor, vae_scale_factor) =
            timed("VAE decoder", || {
                let c = set.get(ComponentKind::Vae)?;
                let cfg_path = c.file("config.json")?;
                let cfg = VaeConfig::from_file(cfg_path)
                    .map_err(PipelineError::load(c.kind, cfg_path))?;
                let layout = PartLayout::Vae {
                    up_blocks: cfg.block_out_channels.len(),
                };
                // Recorded only to count its memory.
                let (vae, weights) =
                    load_part(c, checkpoint, layout, dtype, device, cfg_path, |vb| {
                        let (vb, recording) = record(vb);
                        let vae = VaeDecoder::load(vb, &cfg)?;
                        Ok::<_, candle_core::Error>((vae, recording.finish()))
                    })?;
                let scale_factor = 1usize << cfg.block_out_channels.len().saturating_sub(1);
                Ok((vae, weights, cfg.scaling_factor, scale_factor))
            })?;

        let scheduler_config = {
            let c = set.get(ComponentKind::Scheduler)?;
            let (text, path) = read_text(c, "scheduler_config.json")?;
            // Parse once now so a bad config fails at load, not on the first job.
            DdimScheduler::from_config_json(&text).map_err(PipelineError::load(c.kind, &path))?;
            text
        };

        let bytes = unet_weights.bytes() + text_weights.bytes() + vae_weights.bytes();
        let loras = LoraSupport::new(
            LoraTargets::unet(unet_weights),
            unet.config().clone(),
            LoraTargets::text_encoder(text_weights),
            text_encoder.config().clone(),
        );
        tracing::info!(
            model_set = %set.name,
            mib = bytes / (1 << 20),
            elapsed_ms = start.elapsed().as_millis() as u64,
            "base model ready"
        );
        Ok(BaseModel {
            name: set.name.clone(),
            tokenizer,
            text_encoder,
            unet,
            vae,
            vae_scaling_factor,
            vae_scale_factor,
            scheduler_config,
            loras,
            bytes,
        })
    }
}
