//! Errors of the face-analysis layer. Messages tell the user (or operator) what to do.

use std::path::PathBuf;

use headshot_core::GenerationError;

#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    /// The bytes are not a decodable image (empty, truncated, corrupt, unsupported format).
    #[error("the image could not be read: {reason}")]
    UnreadableImage { reason: String },

    /// The header announces dimensions above the configured limit; nothing was allocated.
    #[error(
        "the image is {width}x{height} pixels, larger than the limit of {max_width}x{max_height}; \
         send a smaller photo"
    )]
    ImageTooLarge {
        width: u32,
        height: u32,
        max_width: u32,
        max_height: u32,
    },

    /// Decoding would need more memory than allowed (e.g. a decompression bomb).
    #[error(
        "the image needs {needed_bytes} bytes to decode, more than the limit of {limit_bytes} bytes; \
         send a smaller photo"
    )]
    ImageNeedsTooMuchMemory { needed_bytes: u64, limit_bytes: u64 },

    /// The image decoded, but the detector found no face above its score threshold.
    #[error("no face was detected in the image; send a clear, front-facing photo of one person")]
    NoFace,

    /// `face_index` asked for a face the photo does not have.
    #[error(
        "face_index {index} is out of range: the photo shows {found} face{plural} \
         (0 is the largest)", plural = if *found == 1 { "" } else { "s" }
    )]
    FaceIndexOutOfRange { index: usize, found: usize },

    /// libonnxruntime could not be opened.
    #[error(
        "could not load the ONNX Runtime library ({reason}); set ORT_DYLIB_PATH to a \
         libonnxruntime.so of version >= 1.31 (the PyPI wheel `onnxruntime` ships it in \
         onnxruntime/capi/, `onnxruntime-gpu` for CUDA) or set FaceAnalyzerOptions::onnxruntime_library"
    )]
    RuntimeLoad { reason: String },

    /// A model file could not be loaded by the inference engine.
    #[error(
        "could not load the face model {path}: {reason} (is it the ONNX file of an insightface \
         model pack such as buffalo_l / buffalo_s? ONNX Runtime was taken from ORT_DYLIB_PATH or \
         FaceAnalyzerOptions::onnxruntime_library)"
    )]
    ModelLoad { path: PathBuf, reason: String },

    /// The model loaded but its inputs/outputs are not those of SCRFD / ArcFace.
    #[error("the face model {path} does not have the expected layout: {reason}")]
    ModelLayout { path: PathBuf, reason: String },

    /// Running a model failed (engine error or unexpected output shape).
    #[error("the {model} model failed: {reason}")]
    Inference { model: &'static str, reason: String },
}

impl From<FaceError> for GenerationError {
    fn from(err: FaceError) -> Self {
        match err {
            // The reason alone: GenerationError's own message already says "could not be read".
            FaceError::UnreadableImage { reason } => GenerationError::UnreadableImage(reason),
            FaceError::ImageTooLarge { .. } | FaceError::ImageNeedsTooMuchMemory { .. } => {
                GenerationError::UnreadableImage(err.to_string())
            }
            FaceError::NoFace => GenerationError::NoFace,
            FaceError::FaceIndexOutOfRange { .. } => GenerationError::InvalidInput(err.to_string()),
            FaceError::RuntimeLoad { .. }
            | FaceError::ModelLoad { .. }
            | FaceError::ModelLayout { .. }
            | FaceError::Inference { .. } => {
                GenerationError::internal_from("face analysis failed", err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_errors_say_could_not_be_read_once() {
        let err: GenerationError = FaceError::UnreadableImage {
            reason: "the data is empty (0 bytes)".into(),
        }
        .into();
        let message = err.to_string();
        assert_eq!(message.matches("could not be read").count(), 1, "{message}");
        assert!(
            message.ends_with("the data is empty (0 bytes)"),
            "{message}"
        );
    }
}
