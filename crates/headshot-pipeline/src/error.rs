//! Errors of loading and running the pipeline, and their mapping onto the wire's error kinds.

use std::path::PathBuf;

use headshot_core::GenerationError;
use headshot_face::FaceError;
use headshot_weights::{ComponentKind, WeightsError};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Weights(#[from] WeightsError),

    #[error("cannot load {component} from {path}: {message}")]
    Load {
        component: ComponentKind,
        path: PathBuf,
        message: String,
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

    /// A model failed while running (shape mismatch, out of memory, ...).
    #[error("{stage} failed: {message}")]
    Run {
        stage: &'static str,
        message: String,
    },
}

impl PipelineError {
    /// `map_err` helper for a failing run stage.
    pub(crate) fn run<E: std::fmt::Display>(
        stage: &'static str,
    ) -> impl FnOnce(E) -> PipelineError {
        move |e| PipelineError::Run {
            stage,
            message: e.to_string(),
        }
    }

    /// `map_err` helper for a component that fails to load from `path`.
    pub(crate) fn load<E: std::fmt::Display>(
        component: ComponentKind,
        path: &std::path::Path,
    ) -> impl FnOnce(E) -> PipelineError {
        let path = path.to_path_buf();
        move |e| PipelineError::Load {
            component,
            path,
            message: e.to_string(),
        }
    }
}

impl From<PipelineError> for GenerationError {
    fn from(err: PipelineError) -> Self {
        match err {
            PipelineError::InvalidInput(message) => GenerationError::InvalidInput(message),
            PipelineError::Face(face) => face.into(),
            other => GenerationError::Internal(other.to_string()),
        }
    }
}
