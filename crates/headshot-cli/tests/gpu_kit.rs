//! tools/gpu-kit/check.sh --device cpu: the GPU kit's whole check on the tiny set, as CI runs it
//! (random set written by our binary, golden parity, speed, the server on loopback), and the
//! fields of the JSON it writes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{test_assets, workspace};
use serde_json::Value;

/// The folder with both binaries: `headshot` (this package) and `headshot-server`, which
/// `cargo test --workspace` builds next to it; built here when only this package is tested.
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_headshot"))
        .parent()
        .unwrap()
        .to_path_buf();
    if !dir.join("headshot-server").is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "headshot-server", "--bin", "headshot-server"])
            .current_dir(workspace())
            .status()
            .unwrap();
        assert!(status.success(), "building headshot-server failed");
    }
    dir
}

#[test]
fn check_sh_on_cpu_runs_every_part_and_writes_the_expected_fields() {
    let bins = bin_dir();
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("bash")
        .arg(workspace().join("tools/gpu-kit/check.sh"))
        .args(["--device", "cpu"])
        .env("OUT", out.path())
        .env("HEADSHOT_BIN_DIR", &bins)
        .env("HEADSHOT_TEST_ASSETS", test_assets())
        .env("HF_HUB_OFFLINE", "1")
        .status()
        .unwrap();
    assert!(status.success(), "check.sh --device cpu failed: {status}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("check.json")).unwrap())
            .unwrap();
    let markdown = std::fs::read_to_string(out.path().join("check.md")).unwrap();
    assert!(
        markdown.contains("| measurement | ours (s) |"),
        "{markdown}"
    );

    let kit = &json["kit"];
    assert_eq!(kit["complete"], true, "{json:#}");
    assert_eq!(kit["device"], "cpu");
    assert!(kit["date"].is_string() && kit["machine"]["cores"].as_u64().unwrap() > 0);
    let parts = &json["parts"];

    assert_eq!(parts["models"]["status"], "ok", "{json:#}");
    assert_eq!(parts["models"]["size"], "tiny");

    let parity = &parts["parity"];
    assert_eq!(parity["status"], "ok", "{parity:#}");
    let checks = parity["checks"].as_array().unwrap();
    assert!(!checks.is_empty());
    for check in checks {
        assert_eq!(check["dtype"], "f32");
        assert_eq!(check["pass"], true, "{check:#}");
        assert!(check["image_max_abs"].as_f64().unwrap() <= 2e-3);
    }
    // diffusers does not run on CPU machines; the output says so.
    assert!(parity["diffusers_status"]
        .as_str()
        .unwrap()
        .starts_with("skipped on CPU"));

    let speed = &parts["speed"];
    assert_eq!(speed["status"], "ok", "{speed:#}");
    let ours = speed["ours"].as_array().unwrap();
    let what = |w: &str| {
        ours.iter()
            .find(|r| r["what"] == w)
            .unwrap_or_else(|| panic!("no {w} in {speed:#}"))
    };
    for w in [
        "job_64x64_21",
        "job_64x64_31",
        "job_64x64_41",
        "job_64x96_21",
        "job_64x64_21_samples2",
        "vae_decode",
        "unet_step",
        "concurrent_1",
        "concurrent_4",
        "concurrent_8",
    ] {
        assert!(what(w)["seconds"].as_f64().unwrap() > 0.0, "{w}");
    }
    assert_eq!(what("concurrent_8")["jobs"], 8);
    assert!(what("concurrent_8")["jobs_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(what("job_64x64_41")["image_finite"], true);
    let table = speed["table"].as_array().unwrap();
    assert!(table
        .iter()
        .any(|r| r["what"] == "unet_step" && r["diffusers_s"].is_null()));
    assert!(speed["diffusers_status"]
        .as_str()
        .unwrap()
        .starts_with("skipped on CPU"));

    let server = &parts["server"];
    assert_eq!(server["status"], "ok", "{server:#}");
    assert_eq!(server["succeeded"], server["requests"]);
    let (p50, p95) = (
        server["latency_p50_s"].as_f64().unwrap(),
        server["latency_p95_s"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p95 >= p50, "{server:#}");
    assert!(server["jobs_per_s"].as_f64().unwrap() > 0.0);
}
