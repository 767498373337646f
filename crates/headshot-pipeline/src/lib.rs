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
//! One job: decode the photo and analyse the largest face -> text embeddings (prompt and, under
//! CFG, the negative prompt or "") -> CLIP `hidden_states[-2]` of the 224 px aligned crop (the
//! unconditional branch uses the all-zero normalised pixel tensor, encoded once at load) -> id
//! tokens with `s_scale` -> context = text tokens then id tokens -> DDIM with classifier-free
//! guidance (none when guidance <= 1, like diffusers) -> VAE decode -> 8-bit images -> safety
//! checker and censoring when asked.

// Replacing flagged images (black / blur / pixelate / sensitive_content_text).
pub mod censor;
// Whether the CUDA code of this build runs on the GPU it is given.
pub mod compute_cap;
mod config;
mod error;
mod generator;
mod load;
pub mod noise;
mod render;

use candle_core::{DType, Device, Tensor};
use headshot_models::clip_preprocess::ClipImageProcessor;
use headshot_models::clip_text::ClipTextEncoder;
use headshot_models::clip_vision::ClipVisionTransformer;
use headshot_models::face_projection::FaceIdPlusProjection;
use headshot_models::safety_checker::SafetyChecker;
use headshot_models::tokenizer::ClipTokenizer;
use headshot_models::unet::UNet2DConditionModel;
use headshot_models::vae::VaeDecoder;

pub use config::{DTypeSpec, DeviceSpec, Limits, ModelSet, PipelineConfig};
pub use error::PipelineError;
pub use render::{to_rgb_images, FaceInput, RenderOutput, RenderRequest, RenderTrace};

/// Every model of a head shot model set, loaded once on one device. Synchronous; owned by the
/// worker thread that drives the device.
pub struct Pipeline {
    device: Device,
    dtype: DType,
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextEncoder,
    image_encoder: ClipVisionTransformer,
    /// CLIPImageProcessor() defaults for the aligned face crop.
    face_processor: ClipImageProcessor,
    projection: FaceIdPlusProjection,
    unet: UNet2DConditionModel,
    vae: VaeDecoder,
    vae_scaling_factor: f64,
    /// Pixels per latent cell (2^(VAE blocks - 1), 8 for SD1.5).
    vae_scale_factor: usize,
    /// The scheduler_config.json text; a fresh DDIM scheduler is built per batch from it.
    scheduler_config: String,
    safety: Option<(SafetyChecker, ClipImageProcessor)>,
    face: Option<headshot_face::FaceAnalyzer>,
    limits: Limits,
    /// `hidden_states[-2]` of the all-zero normalised pixel tensor: the unconditional CLIP input.
    uncond_clip_features: Tensor,
}

impl Pipeline {
    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn has_safety_checker(&self) -> bool {
        self.safety.is_some()
    }

    pub fn has_face_analyzer(&self) -> bool {
        self.face.is_some()
    }

    /// Decodes the photo and analyses its largest face (`NoFace` / unreadable image errors map to
    /// the wire's kinds through `GenerationError::from`).
    pub fn analyze_face(&self, image_bytes: &[u8]) -> Result<FaceInput, PipelineError> {
        let analyzer = self.face.as_ref().ok_or(PipelineError::NoFaceAnalyzer)?;
        Ok(analyzer.analyze_largest(image_bytes)?.into())
    }
}
