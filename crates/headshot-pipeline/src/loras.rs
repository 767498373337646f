//! Users' LoRAs for a batch: the folder they are named from, and the UNet and text encoder with
//! a batch's LoRA set merged in.
//!
//! The base models are never changed. A LoRA set gets its own UNet and text encoder, built from
//! the tensors the base ones loaded (shared handles, no copies) with only the adapted weights
//! replaced by merged copies; the adapter's own LoRA is fused on top as at load. Dropping that
//! pair restores nothing because nothing was touched, so jobs without LoRAs run the base models
//! as before and pay nothing. The last set is kept per base model (an LRU of one): the worker
//! batches jobs of one model set and LoRA set together, and consecutive batches often share it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use headshot_core::LoraChoice;
use headshot_models::clip_text::{ClipTextConfig, ClipTextEncoder};
use headshot_models::lora::{LoraFile, LoraTargets};
use headshot_models::unet::{IpAdapterAttachment, UNet2DConditionModel, UNetConfig};

use crate::base_model::BaseModel;
use crate::error::PipelineError;
use crate::Pipeline;

/// The file extension of a LoRA in the folder: `name.safetensors` is LoRA `name`.
const LORA_EXTENSION: &str = "safetensors";

#[derive(Debug, thiserror::Error)]
pub enum LoraFolderError {
    #[error("cannot list the LoRA folder {dir}")]
    List {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The operator's LoRA folder: every `name.safetensors` in it, listed once at start-up.
#[derive(Debug, Clone)]
pub struct LoraFolder {
    dir: PathBuf,
    names: BTreeSet<String>,
}

impl LoraFolder {
    /// Lists `dir`. Files whose stem is not a valid LoRA name (see
    /// [`headshot_core::wire::is_model_name`]) are skipped with a warning: no request could
    /// name them.
    pub fn scan(dir: impl Into<PathBuf>) -> Result<Self, LoraFolderError> {
        let dir = dir.into();
        let list_err = |source| LoraFolderError::List {
            dir: dir.clone(),
            source,
        };
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).map_err(list_err)? {
            let path = entry.map_err(list_err)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(LORA_EXTENSION) || !path.is_file()
            {
                continue;
            }
            match path.file_stem().and_then(|s| s.to_str()) {
                Some(stem) if headshot_core::wire::is_model_name(stem) => {
                    names.insert(stem.to_string());
                }
                _ => {
                    tracing::warn!(file = %path.display(), "skipping a LoRA file whose name no request can spell")
                }
            }
        }
        Ok(Self { dir, names })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The file of LoRA `name`, if the folder listed it.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.contains(name)
            .then(|| self.dir.join(format!("{name}.{LORA_EXTENSION}")))
    }
}

/// A batch's models with its LoRA set merged in.
pub(crate) struct LoraModels {
    set: Vec<LoraChoice>,
    pub unet: UNet2DConditionModel,
    pub text_encoder: ClipTextEncoder,
}

/// What rebuilding one base model's UNet and text encoder with merged weights needs.
pub(crate) struct LoraSupport {
    unet_targets: LoraTargets,
    unet_config: UNetConfig,
    text_targets: LoraTargets,
    text_config: ClipTextConfig,
    last: Mutex<Option<Arc<LoraModels>>>,
}

impl LoraSupport {
    pub fn new(
        unet_targets: LoraTargets,
        unet_config: UNetConfig,
        text_targets: LoraTargets,
        text_config: ClipTextConfig,
    ) -> Self {
        LoraSupport {
            unet_targets,
            unet_config,
            text_targets,
            text_config,
            last: Mutex::new(None),
        }
    }
}

impl Pipeline {
    /// The LoRA folder this pipeline renders LoRAs from, if one is configured.
    pub fn lora_folder(&self) -> Option<&LoraFolder> {
        self.lora_folder.as_ref()
    }

    /// `base`'s UNet and text encoder with `set` merged in (`None` for no LoRA: the base
    /// models).
    pub(crate) fn lora_models(
        &self,
        base: &BaseModel,
        set: &[LoraChoice],
    ) -> Result<Option<Arc<LoraModels>>, PipelineError> {
        if set.is_empty() {
            return Ok(None);
        }
        let mut last = base
            .loras
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(models) = last.as_ref().filter(|m| m.set == set) {
            return Ok(Some(models.clone()));
        }
        // Free the previous set's merged weights before building the next.
        *last = None;
        let models = Arc::new(self.merge_loras(base, set)?);
        *last = Some(models.clone());
        Ok(Some(models))
    }

    fn merge_loras(
        &self,
        base: &BaseModel,
        set: &[LoraChoice],
    ) -> Result<LoraModels, PipelineError> {
        let start = Instant::now();
        let support = &base.loras;
        let folder = self.lora_folder.as_ref();
        let mut files = Vec::with_capacity(set.len());
        for choice in set {
            let path = folder.and_then(|f| f.path(&choice.name)).ok_or_else(|| {
                PipelineError::InvalidInput(match folder {
                    Some(f) => format!(
                        "The lora model {} is not in the LoRA folder {}.",
                        choice.name,
                        f.dir().display()
                    ),
                    None => format!(
                        "The lora model {} is not available: this server has no LoRA folder.",
                        choice.name
                    ),
                })
            })?;
            let file = LoraFile::load(&path).map_err(PipelineError::Lora)?;
            files.push((file, choice.strength));
        }
        let pairs: Vec<(&LoraFile, f64)> = files.iter().map(|(f, s)| (f, *s)).collect();
        let unet_merged = support.unet_targets.merged(&pairs)?;
        let text_merged = support.text_targets.merged(&pairs)?;
        let (changed_unet, changed_text) = (unet_merged.len(), text_merged.len());

        let dtype = self.dtype;
        let unet_vb =
            support
                .unet_targets
                .weights()
                .var_builder_with(unet_merged, dtype, &self.device);
        let attachment = IpAdapterAttachment {
            weights: &self.adapter,
            num_tokens: self.projection.config().num_tokens,
            scale: base.unet.ip_adapter_scale().unwrap_or(1.0),
        };
        let unet = UNet2DConditionModel::load(unet_vb, &support.unet_config, Some(attachment))
            .map_err(|e| PipelineError::run("merging LoRAs into the UNet")(e))?;
        let text_vb =
            support
                .text_targets
                .weights()
                .var_builder_with(text_merged, dtype, &self.device);
        let text_encoder = ClipTextEncoder::load(text_vb, &support.text_config)
            .map_err(PipelineError::run("merging LoRAs into the text encoder"))?;
        tracing::info!(
            model_set = %base.name,
            loras = ?set.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            unet_weights = changed_unet,
            text_encoder_weights = changed_text,
            elapsed_ms = start.elapsed().as_millis() as u64,
            "merged a LoRA set"
        );
        Ok(LoraModels {
            set: set.to_vec(),
            unet,
            text_encoder,
        })
    }
}
