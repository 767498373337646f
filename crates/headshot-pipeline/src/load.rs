//! Loading every model of a set once: tokenizer, text encoder, image encoder, FaceID projection,
//! UNet (adapter LoRA fused), VAE decoder, scheduler config, safety checker, face analyzer.
//! The UNet, VAE and text encoder come from their own folders' weights, or from the set's
//! single-file checkpoint for those whose component lists only a config.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use headshot_models::clip_preprocess::{ClipImageProcessor, ClipImageProcessorConfig, ResizeRule};
use headshot_models::clip_text::{ClipTextConfig, ClipTextEncoder};
use headshot_models::clip_vision::{ClipVisionConfig, ClipVisionOutputs, ClipVisionTransformer};
use headshot_models::ddim::DdimScheduler;
use headshot_models::face_projection::FaceIdPlusProjection;
use headshot_models::ip_adapter::IpAdapterWeights;
use headshot_models::lora::LoraTargets;
use headshot_models::recorded_weights::record;
use headshot_models::safety_checker::{SafetyChecker, SafetyCheckerConfig};
use headshot_models::tokenizer::ClipTokenizer;
use headshot_models::unet::{IpAdapterAttachment, PerBlock, UNet2DConditionModel, UNetConfig};
use headshot_models::vae::{VaeConfig, VaeDecoder};
use headshot_weights::single_file::{PartLayout, SingleFile, UnetLayout};
use headshot_weights::{ComponentKind, ResolvedComponent, ResolvedModelSet};

use crate::config::{ModelSet, PipelineConfig};
use crate::error::PipelineError;
use crate::loras::LoraSupport;
use crate::Pipeline;

/// A VarBuilder over a component's weights: every `.safetensors` shard (memory-mapped), or a
/// torch `.bin`.
fn var_builder(
    component: &ResolvedComponent,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, PipelineError> {
    let files = component.weights()?;
    let first = files[0];
    let is_safetensors = first.extension().is_some_and(|e| e == "safetensors");
    if is_safetensors {
        // SAFETY: the files are model weights resolved by headshot-weights and are not modified
        // while the pipeline lives (mmap requires that).
        unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }
            .map_err(PipelineError::load(component.kind, first))
    } else {
        VarBuilder::from_pth(first, dtype, device)
            .map_err(PipelineError::load(component.kind, first))
    }
}

/// Builds a UNet, VAE or text encoder (`build`) from its component's own weights, or, when the
/// component lists none, from the set's single-file checkpoint. `cfg_path` names the component
/// in errors about its own weights.
fn load_part<T, E>(
    component: &ResolvedComponent,
    checkpoint: Option<&Arc<SingleFile>>,
    layout: PartLayout,
    dtype: DType,
    device: &Device,
    cfg_path: &Path,
    build: impl FnOnce(VarBuilder<'static>) -> Result<T, E>,
) -> Result<T, PipelineError>
where
    E: Into<crate::error::Cause>,
{
    match checkpoint {
        Some(file) if component.weights().is_err() => file
            .load(layout, dtype, device, |vb| build(vb).map_err(Into::into))
            .map_err(PipelineError::load(component.kind, file.path())),
        _ => build(var_builder(component, dtype, device)?)
            .map_err(PipelineError::load(component.kind, cfg_path)),
    }
}

/// The UNet's block structure, as the checkpoint's names need it.
fn unet_layout(cfg: &UNetConfig) -> PartLayout {
    let blocks = cfg.block_out_channels.len();
    PartLayout::Unet(UnetLayout {
        layers_per_block: match &cfg.layers_per_block {
            PerBlock::Same(n) => vec![*n; blocks],
            PerBlock::Each(each) => each.clone(),
        },
    })
}

fn read_text(
    component: &ResolvedComponent,
    name: &str,
) -> Result<(String, std::path::PathBuf), PipelineError> {
    let path = component.file(name)?.to_path_buf();
    let text =
        std::fs::read_to_string(&path).map_err(PipelineError::load(component.kind, &path))?;
    Ok((text, path))
}

/// The folder holding a component's `name` file (tokenizers read a folder).
fn folder_of(
    component: &ResolvedComponent,
    name: &str,
) -> Result<std::path::PathBuf, PipelineError> {
    let path = component.file(name)?;
    Ok(path.parent().unwrap_or(Path::new(".")).to_path_buf())
}

/// transformers' `CLIPImageProcessor()` defaults at `size` px (224 for every CLIP the reference uses).
fn clip_defaults(size: u32) -> ClipImageProcessorConfig {
    ClipImageProcessorConfig {
        resize: Some(ResizeRule::ShortestEdge(size)),
        crop: Some((size, size)),
        ..ClipImageProcessorConfig::default()
    }
}

fn timed<T>(what: &str, f: impl FnOnce() -> Result<T, PipelineError>) -> Result<T, PipelineError> {
    let start = Instant::now();
    tracing::info!("loading {what}");
    let out = f()?;
    tracing::info!(
        elapsed_ms = start.elapsed().as_millis() as u64,
        "loaded {what}"
    );
    Ok(out)
}

impl PipelineConfig {
    /// The model set's files: a manifest resolved (local -> cache -> hub) for the components
    /// this configuration loads, or the set already given.
    pub fn resolve(&self) -> Result<ResolvedModelSet, PipelineError> {
        let path = match &self.models {
            ModelSet::Resolved(set) => return Ok(set.clone()),
            ModelSet::Manifest(path) => path,
        };
        let mut options = self.resolve.clone();
        if options.only.is_none() {
            let skip_face = !self.load_face_analyzer;
            let skip_safety = !self.load_safety_checker;
            options.only = Some(
                ComponentKind::ALL
                    .into_iter()
                    .filter(|k| {
                        !(k.is_face_model() && skip_face) && !(k.is_safety_model() && skip_safety)
                    })
                    .collect(),
            );
        }
        tracing::info!(manifest = %path.display(), "resolving model set");
        Ok(headshot_weights::resolve_manifest_file(path, &options)?)
    }
}

impl Pipeline {
    /// Resolves the model set (if given as a manifest) and loads every model once onto the
    /// configured device and dtype.
    pub fn load(config: &PipelineConfig) -> Result<Pipeline, PipelineError> {
        Self::load_resolved(&config.resolve()?, config)
    }

    fn load_resolved(
        set: &ResolvedModelSet,
        config: &PipelineConfig,
    ) -> Result<Pipeline, PipelineError> {
        let start = Instant::now();
        let device = config.device.open()?;
        let dtype = config.dtype.dtype();
        tracing::info!(model_set = %set.name, device = %config.device, dtype = %config.dtype, "loading pipeline");

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
            load_part(
                c,
                checkpoint,
                PartLayout::TextEncoder,
                dtype,
                &device,
                cfg_path,
                |vb| {
                    let (vb, recording) = record(vb);
                    let encoder = ClipTextEncoder::load(vb, &cfg)?;
                    Ok::<_, candle_core::Error>((encoder, recording.finish()))
                },
            )
        })?;

        let image_encoder = timed("image encoder", || {
            let c = set.get(ComponentKind::ImageEncoder)?;
            let cfg_path = c.file("config.json")?;
            let cfg = ClipVisionConfig::from_file(cfg_path)
                .map_err(PipelineError::load(c.kind, cfg_path))?;
            ClipVisionTransformer::load_from_model_file(
                var_builder(c, dtype, &device)?,
                &cfg,
                ClipVisionOutputs::PenultimateOnly,
            )
            .map_err(PipelineError::load(c.kind, cfg_path))
        })?;
        // FaceID-PlusV2 feeds the crop through CLIPImageProcessor() with its defaults, sized
        // to the encoder.
        let face_processor = {
            let size = image_encoder.config().image_size as u32;
            ClipImageProcessor::new(clip_defaults(size))
        };

        let (projection, unet, (adapter_weights, unet_weights)) = timed(
            "IP-Adapter, face projection and UNet (fusing the LoRA)",
            || {
                let ip = set.get(ComponentKind::IpAdapter)?;
                let ip_path = ip.weights()?[0];
                let weights = IpAdapterWeights::load(ip_path)
                    .map_err(PipelineError::load(ip.kind, ip_path))?;
                let projection = FaceIdPlusProjection::load_inferred(
                    weights.image_proj_var_builder(dtype, &device),
                )
                .map_err(PipelineError::load(ip.kind, ip_path))?;

                let c = set.get(ComponentKind::Unet)?;
                let cfg_path = c.file("config.json")?;
                let cfg = UNetConfig::from_file(cfg_path)
                    .map_err(PipelineError::load(c.kind, cfg_path))?;
                let attachment = IpAdapterAttachment {
                    weights: &weights,
                    num_tokens: projection.config().num_tokens,
                    scale: config.adapter_scale,
                };
                // The adapter's raw tensors and the UNet's base weights stay for users' LoRAs:
                // a LoRA set rebuilds the UNet from them (shared tensors, see loras.rs).
                let (unet, recorded) = load_part(
                    c,
                    checkpoint,
                    unet_layout(&cfg),
                    dtype,
                    &device,
                    cfg_path,
                    |vb| {
                        let (vb, recording) = record(vb);
                        let unet = UNet2DConditionModel::load(vb, &cfg, Some(attachment))?;
                        Ok::<_, crate::error::Cause>((unet, recording.finish()))
                    },
                )?;
                Ok((projection, unet, (weights, recorded)))
            },
        )?;

        let (vae, vae_scaling_factor, vae_scale_factor) = timed("VAE decoder", || {
            let c = set.get(ComponentKind::Vae)?;
            let cfg_path = c.file("config.json")?;
            let cfg =
                VaeConfig::from_file(cfg_path).map_err(PipelineError::load(c.kind, cfg_path))?;
            let layout = PartLayout::Vae {
                up_blocks: cfg.block_out_channels.len(),
            };
            let vae = load_part(c, checkpoint, layout, dtype, &device, cfg_path, |vb| {
                VaeDecoder::load(vb, &cfg)
            })?;
            let scale_factor = 1usize << cfg.block_out_channels.len().saturating_sub(1);
            Ok((vae, cfg.scaling_factor, scale_factor))
        })?;

        let scheduler_config = {
            let c = set.get(ComponentKind::Scheduler)?;
            let (text, path) = read_text(c, "scheduler_config.json")?;
            // Parse once now so a bad config fails at load, not on the first job.
            DdimScheduler::from_config_json(&text).map_err(PipelineError::load(c.kind, &path))?;
            text
        };

        let safety = match (
            config.load_safety_checker,
            set.optional(ComponentKind::SafetyChecker),
        ) {
            (true, Some(c)) => Some(timed("safety checker", || {
                let cfg_path = c.file("config.json")?;
                let cfg = SafetyCheckerConfig::from_file(cfg_path)
                    .map_err(PipelineError::load(c.kind, cfg_path))?;
                let checker = SafetyChecker::load(var_builder(c, dtype, &device)?, &cfg)
                    .map_err(PipelineError::load(c.kind, cfg_path))?;
                let processor = match set.optional(ComponentKind::FeatureExtractor) {
                    Some(fe) => {
                        let path = fe.file("preprocessor_config.json")?;
                        ClipImageProcessor::from_config_file(path)
                            .map_err(PipelineError::load(fe.kind, path))?
                    }
                    None => ClipImageProcessor::new(clip_defaults(224)),
                };
                Ok((checker, processor))
            })?),
            (true, None) => {
                tracing::warn!(
                    "the model set has no safety_checker; jobs asking for it will be refused"
                );
                None
            }
            (false, _) => None,
        };

        let face = if config.load_face_analyzer {
            Some(std::sync::Arc::new(timed("face analyzer", || {
                let det = set.get(ComponentKind::FaceDetector)?.weights()?[0].to_path_buf();
                let rec = set.get(ComponentKind::FaceRecognizer)?.weights()?[0].to_path_buf();
                let paths = headshot_face::FaceModelPaths {
                    detector: det,
                    recognizer: rec,
                };
                Ok(headshot_face::FaceAnalyzer::load(
                    &paths,
                    &config.face_options,
                )?)
            })?))
        } else {
            None
        };

        let loras = LoraSupport {
            folder: config.lora_folder.clone(),
            unet_targets: LoraTargets::unet(unet_weights),
            unet_config: unet.config().clone(),
            text_targets: LoraTargets::text_encoder(text_weights),
            text_config: text_encoder.config().clone(),
            num_tokens: projection.config().num_tokens,
            adapter: adapter_weights,
            last: std::sync::Mutex::new(None),
        };
        if let Some(folder) = &loras.folder {
            tracing::info!(dir = %folder.dir().display(), loras = ?folder.names().collect::<Vec<_>>(), "LoRA folder");
        }

        let mut pipeline = Pipeline {
            device,
            model_set: set.name.clone(),
            dtype,
            tokenizer,
            text_encoder,
            image_encoder,
            face_processor,
            projection,
            unet,
            vae,
            vae_scaling_factor,
            vae_scale_factor,
            scheduler_config,
            safety,
            face,
            limits: config.limits.clone(),
            uncond_clip_features: Tensor::zeros(1, DType::F32, &Device::Cpu)
                .map_err(PipelineError::run("setup"))?,
            loras,
        };
        // The unconditional CLIP input is constant (an all-zero normalised pixel tensor):
        // encode it once here instead of once per job.
        pipeline.uncond_clip_features = pipeline.zero_image_features()?;
        tracing::info!(
            elapsed_ms = start.elapsed().as_millis() as u64,
            "pipeline ready"
        );
        Ok(pipeline)
    }

    fn zero_image_features(&self) -> Result<Tensor, PipelineError> {
        let cfg = self.image_encoder.config();
        let zeros = Tensor::zeros(
            (1, cfg.num_channels, cfg.image_size, cfg.image_size),
            self.dtype,
            &self.device,
        )
        .map_err(PipelineError::run("image encoder"))?;
        self.image_encoder
            .penultimate_hidden_states(&zeros)
            .map_err(PipelineError::run("image encoder"))
    }
}
