//! Face analysis for headshot-server, matching insightface 0.7.3 as used by IP-Adapter
//! FaceID-PlusV2: SCRFD detection (5 keypoints), 5-point similarity alignment
//! (`face_align.norm_crop`) at 112 and 224 px, ArcFace identity embedding (512-d, L2-normalised).
//!
//! ```no_run
//! use headshot_face::{FaceAnalyzer, FaceAnalyzerOptions, FaceModelPaths};
//! let analyzer = FaceAnalyzer::load(
//!     &FaceModelPaths { detector: "det_10g.onnx".into(), recognizer: "w600k_r50.onnx".into() },
//!     &FaceAnalyzerOptions::default(), // ONNX Runtime from ORT_DYLIB_PATH
//! )?;
//! let face = analyzer.analyze_largest(&std::fs::read("photo.jpg")?)?;
//! assert_eq!(face.embedding.len(), 512);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The engine is ONNX Runtime via `ort` (load-dynamic); why, and how a candle backend would
//! plug in, is documented in `engine.rs` and the crate README.

mod align;
mod analyzer;
mod decode;
mod detect;
mod engine;
mod error;
mod jpeg;
mod likeness;
mod prepare;
mod resize;

pub use align::{
    estimate_similarity, norm_crop_transform, warp_affine, Affine, ARCFACE_TEMPLATE_112,
};
pub use analyzer::{
    faces_by_size, largest_face, AnalyzedFace, DetectedFace, FaceAnalyzer, FaceAnalyzerOptions,
    FaceModelPaths,
};
pub use decode::{decode_image, DecodeLimits, DecodedImage};
pub use engine::onnxruntime_in_folder;
pub use error::FaceError;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn analyzer_is_send_and_sync() {
        assert_send_sync::<super::FaceAnalyzer>();
    }
}
