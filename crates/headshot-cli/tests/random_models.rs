//! `headshot random-models`: the tiny set is byte-for-byte reproducible from its seed, loads in
//! our pipeline from the manifest it writes (face models included), and keeps a 41-step f32
//! and f16 DDIM run finite and non-degenerate.

mod common;

use std::path::Path;

use common::{headshot, test_assets};
use headshot_core::{JobSettings, PreparedFace};
use headshot_pipeline::{DTypeSpec, Pipeline, PipelineConfig, RenderOptions};

fn write_set(out: &Path, seed: u64) {
    let status = headshot()
        .args([
            "random-models",
            "--size",
            "tiny",
            "--dtype",
            "f32",
            "--seed",
        ])
        .arg(seed.to_string())
        .arg("--face-models")
        .arg(test_assets())
        .arg("--out")
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "headshot random-models failed: {status}");
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_tiny_random_set_is_reproducible_and_renders_41_steps_in_f32_and_f16() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    write_set(&a, 3);
    write_set(&b, 3);
    write_set(&c, 4);
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    assert_eq!(fa.len(), fb.len());
    assert!(fa == fb, "the same seed wrote different files");
    let unet = "sd15/unet/diffusion_pytorch_model.safetensors";
    let get = |f: &[(String, Vec<u8>)]| f.iter().find(|(n, _)| n == unet).unwrap().1.clone();
    assert_ne!(get(&fa), get(&fc), "another seed wrote the same UNet");

    for dtype in [DTypeSpec::F32, DTypeSpec::F16] {
        let mut config = PipelineConfig::new(a.join("models.toml"));
        config.dtype = dtype;
        config.resolve.allow_download = false;
        config.resolve.progress = false;
        config.face_options.onnxruntime_library =
            headshot_face::onnxruntime_in_folder(&test_assets());
        let pipeline = Pipeline::load(&config)
            .unwrap_or_else(|e| panic!("loading the random set in {dtype}: {e}"));
        assert!(pipeline.has_face_analyzer() && pipeline.has_safety_checker());
        let face = PreparedFace {
            id_embedding: (0..512)
                .map(|i| if i % 3 == 0 { 0.07 } else { -0.03 })
                .collect(),
            aligned_224: headshot_core::RgbImage {
                width: 224,
                height: 224,
                pixels: (0..224 * 224 * 3).map(|i| (i % 251) as u8).collect(),
            },
            faces_found: 1,
            more_aligned_224: Vec::new(),
        };
        let request = JobSettings {
            prompt: "pretty woman".into(),
            negative_prompt: "blurry".into(),
            width: 64,
            height: 64,
            num_inference_steps: 41,
            guidance_scale: 7.5,
            s_scale: 1.0,
            samples: 1,
            seed: 11,
            safety_checker: None,
            face_index: 0,
            candidates: 0,
            model: Default::default(),
        };
        let out = pipeline
            .render(&request, &face, &RenderOptions::traced())
            .unwrap();
        let trace = out.trace.as_ref().unwrap();
        let latents: Vec<f32> = trace
            .final_latents
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let image: Vec<f32> = trace.image.flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            latents.iter().chain(&image).all(|v| v.is_finite()),
            "{dtype}: non-finite values"
        );
        let mean = image.iter().sum::<f32>() / image.len() as f32;
        let std =
            (image.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / image.len() as f32).sqrt();
        let clamped =
            image.iter().filter(|v| **v <= 0.0 || **v >= 1.0).count() as f32 / image.len() as f32;
        println!("{dtype}: image mean {mean:.3} std {std:.3}, clamped {clamped:.3}");
        assert!(std > 0.02, "{dtype}: a flat image (std {std})");
        assert!(clamped < 0.5, "{dtype}: mostly clamped ({clamped})");
    }
}
