//! Shared by the `headshot` binary's integration tests.

#![allow(dead_code, unused_imports)]

use std::path::PathBuf;
use std::process::Command;

pub use headshot_test_support::workspace;

pub fn headshot() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_headshot"));
    cmd.env("HF_HUB_OFFLINE", "1").env("RUST_LOG", "warn");
    cmd
}

/// The face test assets (buffalo_s models, photos, libonnxruntime).
pub fn test_assets() -> PathBuf {
    headshot_test_support::test_assets().to_path_buf()
}
