//! Errors of loading and running the pipeline, and their mapping onto the wire's error kinds.
//! Causes are kept (`#[source]`), so logs show the whole chain down to candle's message.

use std::path::PathBuf;

use headshot_core::GenerationError;
use headshot_face::FaceError;
use headshot_weights::{ComponentKind, WeightsError};

/// Any underlying error (candle, I/O, JSON, a tokenizer), kept as the cause.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Weights(#[from] WeightsError),

    #[error("cannot load {component} from {path}")]
    Load {
        component: ComponentKind,
        path: PathBuf,
        #[source]
        source: Cause,
    },

    #[error("cannot use device {device}: {message}")]
    Device { device: String, message: String },

    /// The request cannot be honoured as asked (size, steps, missing safety checker, ...).
    #[error("{0}")]
    InvalidInput(String),

    #[error(transparent)]
    Face(#[from] FaceError),

    #[error(
        "this pipeline was loaded without the face models (PipelineConfig::load_face_analyzer = false); \
         pass an analysed face (id embedding + 224 px crop) instead of a photo"
    )]
    NoFaceAnalyzer,

    /// The step observer stopped the denoising loop after `done` of `total` steps.
    #[error("cancelled after {done} of {total} denoising steps")]
    Cancelled { done: usize, total: usize },

    /// The operator's list of model sets cannot be served as given.
    #[error("{0}")]
    ModelSets(String),

    /// A set a job picked by `model_id` failed to load on demand.
    #[error("cannot load the model set {id}")]
    ModelSetLoad {
        id: String,
        #[source]
        source: Box<PipelineError>,
    },

    /// A job's LoRA file is not a usable LoRA for this model set.
    #[error(transparent)]
    Lora(#[from] headshot_models::lora::LoraError),

    /// A model failed while running (shape mismatch, out of memory, ...).
    #[error("{stage} failed")]
    Run {
        stage: &'static str,
        #[source]
        source: Cause,
    },
}

impl PipelineError {
    /// `map_err` helper for a failing run stage.
    pub(crate) fn run<E: Into<Cause>>(stage: &'static str) -> impl FnOnce(E) -> PipelineError {
        move |e| PipelineError::Run {
            stage,
            source: e.into(),
        }
    }

    /// `map_err` helper for a component that fails to load from `path`.
    pub(crate) fn load<E: Into<Cause>>(
        component: ComponentKind,
        path: &std::path::Path,
    ) -> impl FnOnce(E) -> PipelineError {
        let path = path.to_path_buf();
        move |e| PipelineError::Load {
            component,
            path,
            source: e.into(),
        }
    }
}

impl From<PipelineError> for GenerationError {
    fn from(err: PipelineError) -> Self {
        match err {
            PipelineError::InvalidInput(message) => GenerationError::InvalidInput(message),
            PipelineError::Face(face) => face.into(),
            // The job named this file; it is the request that cannot be honoured.
            PipelineError::Lora(lora) => GenerationError::InvalidInput(lora.to_string()),
            PipelineError::Cancelled { .. } => GenerationError::Cancelled,
            other => GenerationError::internal_from("the model pipeline failed", other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_failure_reaches_the_job_error_with_its_cause() {
        let candle = candle_core::Error::Msg("shape mismatch in unet".into());
        let err: GenerationError = PipelineError::run("unet")(candle).into();
        assert_eq!(
            headshot_core::error_chain(&err),
            "generation failed: the model pipeline failed: unet failed: shape mismatch in unet"
        );
    }
}
