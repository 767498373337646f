//! Loading a pipeline: the parts every model set shares (image encoder, FaceID adapter and
//! projection, safety checker, face analyzer) once, the default set's base model
//! (`base_model.rs`), and the other sets' files resolved for loading on demand
//! (`model_sets.rs`). The UNet, VAE and text encoder come from their own folders' weights, or
//! from the set's single-file checkpoint for those whose component lists only a config.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use headshot_models::clip_preprocess::{ClipImageProcessor, ClipImageProcessorConfig, ResizeRule};
use headshot_models::clip_vision::{ClipVisionConfig, ClipVisionOutputs, ClipVisionTransformer};
use headshot_models::face_projection::FaceIdPlusProjection;
use headshot_models::ip_adapter::IpAdapterWeights;
use headshot_models::safety_checker::{SafetyChecker, SafetyCheckerConfig};
use headshot_models::unet::{PerBlock, UNetConfig};
use headshot_weights::single_file::{PartLayout, SingleFile, UnetLayout};
use headshot_weights::{ComponentKind, Manifest, ResolvedComponent, ResolvedModelSet};

use crate::base_model::{BaseLoad, BaseModel};
use crate::config::{ModelSet, OnDemandSet, PipelineConfig};
use crate::error::PipelineError;
use crate::model_sets::ModelSets;
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
pub(crate) fn load_part<T, E>(
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
pub(crate) fn unet_layout(cfg: &UNetConfig) -> PartLayout {
    let blocks = cfg.block_out_channels.len();
    PartLayout::Unet(UnetLayout {
        layers_per_block: match &cfg.layers_per_block {
            PerBlock::Same(n) => vec![*n; blocks],
            PerBlock::Each(each) => each.clone(),
        },
    })
}

pub(crate) fn read_text(
    component: &ResolvedComponent,
    name: &str,
) -> Result<(String, std::path::PathBuf), PipelineError> {
    let path = component.file(name)?.to_path_buf();
    let text =
        std::fs::read_to_string(&path).map_err(PipelineError::load(component.kind, &path))?;
    Ok((text, path))
}

/// The folder holding a component's `name` file (tokenizers read a folder).
pub(crate) fn folder_of(
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

pub(crate) fn timed<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, PipelineError>,
) -> Result<T, PipelineError> {
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

impl PipelineConfig {
    /// The files of the sets jobs pick by `model_id`, each resolved now (a missing file fails at
    /// start-up, not on a job), only its base parts (tokenizer, text encoder, UNet, VAE,
    /// scheduler, checkpoint). A plain checkpoint path is the default set's manifest with that
    /// file's UNet, VAE and text encoder. Refuses an id given twice or equal to the default
    /// set's name, and a manifest naming other shared parts (face models, image encoder,
    /// IP-Adapter, safety checker) than the default set's: those are loaded once, for all.
    pub fn resolve_on_demand(&self) -> Result<Vec<OnDemandSet>, PipelineError> {
        if self.on_demand.is_empty() {
            return Ok(Vec::new());
        }
        let default_manifest = match &self.models {
            ModelSet::Manifest(path) => Some(Manifest::from_file(path)?),
            ModelSet::Resolved(_) => None,
        };
        let default_name = match (&self.models, &default_manifest) {
            (_, Some(manifest)) => manifest.name.clone(),
            (ModelSet::Resolved(set), None) => set.name.clone(),
            (ModelSet::Manifest(_), None) => unreachable!("read above"),
        };
        let mut options = self.resolve.clone();
        options.only = Some(
            ComponentKind::ALL
                .into_iter()
                .filter(|k| k.is_base_model())
                .collect(),
        );
        let mut seen = std::collections::BTreeSet::new();
        let mut resolved = Vec::with_capacity(self.on_demand.len());
        for set in &self.on_demand {
            if set.id == default_name {
                return Err(PipelineError::ModelSets(format!(
                    "the model set id {} is the default set's own name; it needs no entry",
                    set.id
                )));
            }
            if !seen.insert(set.id.as_str()) {
                return Err(PipelineError::ModelSets(format!(
                    "the model set id {} is listed twice",
                    set.id
                )));
            }
            let models = match &set.models {
                ModelSet::Resolved(done) => done.clone(),
                ModelSet::Manifest(path) => {
                    let manifest = if headshot_weights::manifest::is_checkpoint_path(path) {
                        let base = match &default_manifest {
                            Some(base) => base.clone(),
                            None => Manifest::default_base()?,
                        };
                        base.with_checkpoint(path)?
                    } else {
                        Manifest::from_file(path)?
                    };
                    if let Some(base) = &default_manifest {
                        let differing = manifest.shared_parts_differing_from(base);
                        if !differing.is_empty() {
                            let kinds: Vec<&str> = differing.iter().map(|k| k.key()).collect();
                            return Err(PipelineError::ModelSets(format!(
                                "the model set {} ({}) names its own {}, unlike the default set {}; \
                                 every set shares the default set's face models, image encoder, \
                                 IP-Adapter and safety checker, so list the same ones or leave them out",
                                set.id,
                                path.display(),
                                kinds.join(", "),
                                base.path.display()
                            )));
                        }
                    }
                    tracing::info!(id = %set.id, manifest = %path.display(), "resolving a model set loaded on demand");
                    headshot_weights::resolve(&manifest, &options)?
                }
            };
            resolved.push(OnDemandSet {
                id: set.id.clone(),
                models: ModelSet::Resolved(models),
            });
        }
        Ok(resolved)
    }
}

impl Pipeline {
    /// Resolves the model sets (those given as manifests) and loads the shared models and the
    /// default set's base model once onto the configured device and dtype; the other sets load
    /// when a job first names them.
    pub fn load(config: &PipelineConfig) -> Result<Pipeline, PipelineError> {
        let on_demand = config.resolve_on_demand()?;
        Self::load_resolved(&config.resolve()?, on_demand, config)
    }

    fn load_resolved(
        set: &ResolvedModelSet,
        on_demand: Vec<OnDemandSet>,
        config: &PipelineConfig,
    ) -> Result<Pipeline, PipelineError> {
        let start = Instant::now();
        let device = config.device.open()?;
        let dtype = config.dtype.dtype();
        tracing::info!(model_set = %set.name, device = %config.device, dtype = %config.dtype, "loading pipeline");

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

        let (adapter, projection) = timed("IP-Adapter and face projection", || {
            let ip = set.get(ComponentKind::IpAdapter)?;
            let ip_path = ip.weights()?[0];
            let weights =
                IpAdapterWeights::load(ip_path).map_err(PipelineError::load(ip.kind, ip_path))?;
            let projection =
                FaceIdPlusProjection::load_inferred(weights.image_proj_var_builder(dtype, &device))
                    .map_err(PipelineError::load(ip.kind, ip_path))?;
            Ok((weights, projection))
        })?;

        // The adapter's raw tensors stay: every base model loaded later, and every user LoRA
        // set, fuses its LoRA into a UNet again.
        let base_load = BaseLoad {
            adapter: &adapter,
            num_tokens: projection.config().num_tokens,
            adapter_scale: config.adapter_scale,
            dtype,
            device: &device,
        };
        let base = BaseModel::load(set, &base_load)?;
        let model_sets = ModelSets::new(&set.name, on_demand, config.on_demand_memory, &base)?;

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

        if let Some(folder) = &config.lora_folder {
            tracing::info!(dir = %folder.dir().display(), loras = ?folder.names().collect::<Vec<_>>(), "LoRA folder");
        }

        let mut pipeline = Pipeline {
            device,
            dtype,
            image_encoder,
            face_processor,
            projection,
            adapter,
            adapter_scale: config.adapter_scale,
            base: std::sync::Arc::new(base),
            model_sets,
            safety,
            face,
            limits: config.limits.clone(),
            uncond_clip_features: Tensor::zeros(1, DType::F32, &Device::Cpu)
                .map_err(PipelineError::run("setup"))?,
            lora_folder: config.lora_folder.clone(),
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
