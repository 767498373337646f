//! The `headshot` binary on the tiny model set: generate from an embedding + crop (with and
//! without injected latents), fetch-models on a local set, and the offline error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod common;

use candle_core::{Device, Tensor};
use common::{headshot, test_assets, workspace};

fn write_face(dir: &Path) -> (PathBuf, PathBuf) {
    let values: Vec<f32> = (0..512)
        .map(|i| if i % 2 == 0 { 0.0442 } else { -0.0442 })
        .collect();
    let embedding = Tensor::from_vec(values, (1, 512), &Device::Cpu).unwrap();
    let emb_path = dir.join("emb.safetensors");
    candle_core::safetensors::save(
        &HashMap::from([("embedding".to_string(), embedding)]),
        &emb_path,
    )
    .unwrap();
    let crop = image::RgbImage::from_fn(224, 224, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let crop_path = dir.join("crop.png");
    crop.save(&crop_path).unwrap();
    (emb_path, crop_path)
}

fn generate(dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let (emb, crop) = write_face(dir);
    headshot()
        .args(["generate", "--models"])
        .arg(workspace().join("models/tiny.toml"))
        .arg("--face-embedding")
        .arg(&emb)
        .arg("--face-crop")
        .arg(&crop)
        .args([
            "--prompt",
            "pretty woman",
            "--width",
            "128",
            "--height",
            "64",
            "--steps",
            "2",
        ])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn generate_writes_pngs_and_honours_latents() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = generate(dir.path(), &out, &["--samples", "2", "--seed", "9"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for i in 0..2 {
        let png = image::open(out.join(format!("headshot-9-{i}.png"))).unwrap();
        assert_eq!((png.width(), png.height()), (128, 64));
    }

    // The same latents give the same picture whatever the seed.
    let latents = Tensor::randn(0f32, 1.0, (1, 4, 8, 16), &Device::Cpu).unwrap();
    let latents_path = dir.path().join("latents.safetensors");
    candle_core::safetensors::save(
        &HashMap::from([("latents".to_string(), latents)]),
        &latents_path,
    )
    .unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (folder, seed) in [(&a, "1"), (&b, "2")] {
        let run = generate(
            dir.path(),
            folder,
            &["--latents", latents_path.to_str().unwrap(), "--seed", seed],
        );
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let img_a = image::open(a.join("headshot-1-0.png")).unwrap().to_rgb8();
    let img_b = image::open(b.join("headshot-2-0.png")).unwrap().to_rgb8();
    assert_eq!(img_a, img_b);

    let bad = generate(
        dir.path(),
        &out,
        &[
            "--latents",
            latents_path.to_str().unwrap(),
            "--samples",
            "2",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("initial latents must be [2, 4, 8, 16]"));
}

#[test]
fn fetch_models_lists_local_files_and_reports_offline_misses() {
    let run = headshot()
        .args(["fetch-models", "--skip-face-models", "--models"])
        .arg(workspace().join("models/tiny.toml"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let listing = String::from_utf8_lossy(&run.stdout);
    assert!(
        listing.contains("ip-adapter-faceid-plusv2_sd15.bin") && listing.contains("Local"),
        "{listing}"
    );

    let empty_cache = tempfile::tempdir().unwrap();
    let run = headshot()
        .env("HF_HUB_CACHE", empty_cache.path())
        .args(["fetch-models", "--models"])
        .arg(workspace().join("models/sd15-faceid-plusv2.toml"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("HF_HUB_OFFLINE") || err.contains("offline"),
        "{err}"
    );
    assert!(
        err.contains("sd15-faceid-plusv2.toml") && err.contains("fetch-models"),
        "{err}"
    );
}

#[test]
fn generate_from_a_photo_with_the_safety_checker() {
    let assets = test_assets();
    let dir = tempfile::tempdir().unwrap();
    let run = headshot()
        .env("HEADSHOT_TEST_ASSETS", &assets)
        .args(["generate", "--models"])
        .arg(workspace().join("models/tiny.toml"))
        .arg("--face")
        .arg(assets.join("yaoming.jpg"))
        .arg("--onnxruntime-library")
        .arg(&assets) // a folder: the newest libonnxruntime in it is loaded
        .args([
            "--prompt",
            "pretty woman",
            "--width",
            "64",
            "--height",
            "64",
            "--steps",
            "2",
            "--seed",
            "3",
        ])
        .args(["--safety-checker", "blur", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let png = image::open(dir.path().join("headshot-3-0.png")).unwrap();
    assert_eq!((png.width(), png.height()), (64, 64));

    let not_a_face = dir.path().join("noise.png");
    image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 0]))
        .save(&not_a_face)
        .unwrap();
    let run = headshot()
        .env("HEADSHOT_TEST_ASSETS", &assets)
        .env("ORT_DYLIB_PATH", &assets)
        .args(["generate", "--models"])
        .arg(workspace().join("models/tiny.toml"))
        .arg("--face")
        .arg(&not_a_face)
        .args(["--prompt", "x", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("no face was detected"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
