//! The end-to-end head shot pipeline implementing `headshot_core::Generator`: Stable Diffusion
//! 1.5 with IP-Adapter FaceID PlusV2 in candle, face analysis (SCRFD + ArcFace) in front, the
//! safety checker and censoring behind.
//!
//! ```no_run
//! use headshot_pipeline::{Pipeline, PipelineConfig};
//! let pipeline = Pipeline::load(&PipelineConfig::new("models/sd15-faceid-plusv2.toml"))?;
//! # Ok::<(), headshot_pipeline::PipelineError>(())
//! ```
//!
//! The worker runs it in two stages. Prepare (on the CPU pool, before the device queue):
//! [`Pipeline::face_analyzer`] decodes the photo and analyses its largest face. Device (the
//! `Generator` impl, `generator.rs`): `conditioning.rs` encodes the text (prompt and, under CFG,
//! the negative prompt or ""), CLIP `hidden_states[-2]` of the 224 px aligned crop (the
//! unconditional branch uses the all-zero normalised pixel tensor, encoded once at load) and
//! the id tokens with `s_scale`; context = text tokens then id tokens; `denoise.rs` runs the
//! job's sampler (DDIM unless `scheduler` names another) with classifier-free guidance (none
//! when guidance <= 1, like diffusers); `decode.rs` decodes
//! with the VAE, rounds to 8-bit images and runs the safety checker and censoring when asked;
//! `render.rs` ties them together for a batch and builds the opt-in trace.

// The parts in which SD1.5 fine-tunes differ: tokenizer, text encoder, UNet, VAE, scheduler.
mod base_model;
// Replacing flagged images (black / blur / pixelate / sensitive_content_text).
pub mod censor;
// Whether the CUDA code of this build runs on the GPU it is given.
pub mod compute_cap;
mod conditioning;
mod config;
mod decode;
mod denoise;
mod error;
mod generator;
mod load;
// Users' LoRAs: the folder, and per-set merged UNet / text encoder.
mod loras;
// Several base models: `model_id`, loading on demand, least recently used unloaded.
mod model_sets;
pub mod noise;
mod render;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use headshot_core::{
    prepare_job, FacePreparer, GenerationError, GenerationJob, JobLimits, PreparedFace, PreparedJob,
};
use headshot_models::clip_preprocess::ClipImageProcessor;
use headshot_models::clip_vision::ClipVisionTransformer;
use headshot_models::face_projection::FaceIdPlusProjection;
use headshot_models::ip_adapter::IpAdapterWeights;
use headshot_models::safety_checker::SafetyChecker;

use base_model::BaseModel;

pub use config::{DTypeSpec, DeviceSpec, Limits, ModelSet, OnDemandSet, PipelineConfig};
pub use decode::to_rgb_images;
pub use error::{Cause, PipelineError};
pub use headshot_core::ModelSetState;
pub use loras::{LoraFolder, LoraFolderError};
pub use render::{RenderOptions, RenderOutput, RenderTrace};

/// Every model of a head shot model set, loaded once on one device, and the other base models
/// jobs may pick by `model_id` (loaded on demand, `model_sets.rs`). Synchronous; owned by the
/// worker thread that drives the device. The face analyzer is loaded with it but runs in the
/// prepare stage ([`Pipeline::face_analyzer`]), never on the device thread.
pub struct Pipeline {
    device: Device,
    dtype: DType,
    image_encoder: ClipVisionTransformer,
    /// CLIPImageProcessor() defaults for the aligned face crop.
    face_processor: ClipImageProcessor,
    projection: FaceIdPlusProjection,
    /// The adapter's raw tensors: its LoRA is fused into every base model's UNet loaded later
    /// and every UNet a user LoRA set rebuilds.
    adapter: IpAdapterWeights,
    adapter_scale: f64,
    /// The default set's tokenizer, text encoder, UNet, VAE and scheduler config.
    base: Arc<BaseModel>,
    /// The sets jobs pick by `model_id`, and those loaded now.
    model_sets: model_sets::ModelSets,
    safety: Option<(SafetyChecker, ClipImageProcessor)>,
    face: Option<Arc<headshot_face::FaceAnalyzer>>,
    limits: Limits,
    /// `hidden_states[-2]` of the all-zero normalised pixel tensor: the unconditional CLIP input.
    uncond_clip_features: Tensor,
    /// Users' LoRAs, named by a job's `lora_model`.
    lora_folder: Option<LoraFolder>,
}

impl Pipeline {
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The name of the default model set this pipeline loaded.
    pub fn model_set(&self) -> &str {
        &self.base.name
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The configured limits and whether the safety checker can be asked for.
    pub fn job_limits(&self) -> JobLimits {
        JobLimits {
            max_batch_images: self.limits.max_batch_images,
            max_width: self.limits.max_width,
            max_height: self.limits.max_height,
            max_steps: self.limits.max_steps,
            max_samples: self.limits.max_samples,
            safety_checker: self.safety.is_some(),
        }
    }

    pub fn has_safety_checker(&self) -> bool {
        self.safety.is_some()
    }

    pub fn has_face_analyzer(&self) -> bool {
        self.face.is_some()
    }

    /// The face analyzer loaded with this model set, for the worker's prepare stage.
    pub fn face_analyzer(&self) -> Option<Arc<headshot_face::FaceAnalyzer>> {
        self.face.clone()
    }

    /// Decodes the photo and analyses its largest face, as the prepare stage does.
    pub fn analyze_face(&self, image_bytes: &[u8]) -> Result<PreparedFace, GenerationError> {
        let analyzer = self
            .face
            .as_deref()
            .ok_or_else(|| GenerationError::from(PipelineError::NoFaceAnalyzer))?;
        analyzer.prepare_face(image_bytes, 0)
    }

    /// The prepare stage in-line (the CLI, tests): the job checked against this pipeline's
    /// limits, then its photo analysed. The server runs the same on its prepare pool.
    pub fn prepare(&self, job: GenerationJob) -> Result<PreparedJob, GenerationError> {
        let analyzer = self
            .face
            .as_deref()
            .ok_or_else(|| GenerationError::from(PipelineError::NoFaceAnalyzer))?;
        prepare_job(job, &self.job_limits(), analyzer)
    }
}
