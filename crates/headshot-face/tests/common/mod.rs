//! Shared test setup: the PyPI-fetched assets (models, photos, libonnxruntime) and one analyzer.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use headshot_face::{FaceAnalyzer, FaceAnalyzerOptions, FaceModelPaths};

pub use headshot_test_support::{test_assets as assets_dir, workspace as repo_root};

pub fn goldens_dir() -> PathBuf {
    repo_root().join("tests/fixtures/goldens/face")
}

pub fn model_paths() -> FaceModelPaths {
    let dir = assets_dir();
    FaceModelPaths {
        detector: dir.join("scrfd_500m_bnkps.onnx"),
        recognizer: dir.join("w600k_mbf.onnx"),
    }
}

pub fn options() -> FaceAnalyzerOptions {
    FaceAnalyzerOptions {
        onnxruntime_library: headshot_face::onnxruntime_in_folder(assets_dir()),
        intra_threads: Some(2),
        ..FaceAnalyzerOptions::default()
    }
}

/// One analyzer for all tests of a binary (loading sessions is the slow part).
pub fn analyzer() -> &'static FaceAnalyzer {
    static ANALYZER: OnceLock<FaceAnalyzer> = OnceLock::new();
    ANALYZER.get_or_init(|| {
        FaceAnalyzer::load(&model_paths(), &options()).unwrap_or_else(|e| panic!("{e}"))
    })
}
