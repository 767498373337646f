//! diffusers' StableDiffusionSafetyChecker goldens from `tests/fixtures/goldens/safety_checker.safetensors`
//! (tiny random-weight checker in `tests/fixtures/tiny/sd15/safety_checker`).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use headshot_core::RgbImage;
use headshot_models::clip_preprocess::ClipImageProcessor;
use headshot_models::safety_checker::{SafetyChecker, SafetyCheckerConfig};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn goldens() -> HashMap<String, Tensor> {
    let path = fixtures().join("goldens/safety_checker.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn checker() -> SafetyChecker {
    SafetyChecker::from_folder(
        fixtures().join("tiny/sd15/safety_checker"),
        &Device::Cpu,
        DType::F32,
    )
    .expect("the tiny safety checker loads")
}

fn images(g: &HashMap<String, Tensor>) -> Vec<RgbImage> {
    let batch = &g["images_u8"];
    let (b, h, w, _) = batch.dims4().unwrap();
    (0..b)
        .map(|i| RgbImage {
            width: w as u32,
            height: h as u32,
            pixels: batch
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<u8>()
                .unwrap(),
        })
        .collect()
}

fn assert_close(name: &str, ours: &[Vec<f32>], golden: &Tensor, tol: f32) {
    let golden = golden.to_vec2::<f32>().unwrap();
    assert_eq!(ours.len(), golden.len(), "{name}: batch size");
    let mut worst = 0f32;
    for (i, (a, b)) in ours.iter().zip(&golden).enumerate() {
        assert_eq!(a.len(), b.len(), "{name}[{i}]: length");
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol,
                "{name}[{i}][{k}]: ours {x}, diffusers {y}"
            );
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!("{name}: max abs diff {worst:e}");
}

#[test]
fn counts_and_thresholds_come_from_the_weights() {
    let c = checker();
    let g = goldens();
    assert_eq!(
        c.num_concepts(),
        g["concept_embeds_weights"].dim(0).unwrap()
    );
    assert_eq!(
        c.num_special_concepts(),
        g["special_care_embeds_weights"].dim(0).unwrap()
    );
    assert_eq!(c.image_size(), 224);
}

#[test]
fn image_embeds_match_diffusers() {
    let g = goldens();
    let embeds = checker().image_embeds(&g["pixel_values"]).unwrap();
    assert_close(
        "image_embeds",
        &embeds.to_vec2::<f32>().unwrap(),
        &g["image_embeds"],
        1e-4,
    );
}

#[test]
fn similarities_scores_and_flags_match_diffusers_from_golden_pixels() {
    let g = goldens();
    let verdicts = checker().check(&g["pixel_values"]).unwrap();
    let collect =
        |f: fn(&headshot_models::safety_checker::SafetyVerdict) -> &Vec<f32>| -> Vec<Vec<f32>> {
            verdicts.iter().map(|v| f(v).clone()).collect()
        };
    assert_close(
        "special_cos",
        &collect(|v| &v.special_cos),
        &g["special_cos"],
        1e-4,
    );
    assert_close(
        "concept_cos",
        &collect(|v| &v.concept_cos),
        &g["concept_cos"],
        1e-4,
    );
    // Scores are rounded to 3 decimals: a similarity within 1e-4 may still round one step apart.
    assert_close(
        "special_scores",
        &collect(|v| &v.special_scores),
        &g["special_scores"],
        0.0011,
    );
    assert_close(
        "concept_scores",
        &collect(|v| &v.concept_scores),
        &g["concept_scores"],
        0.0011,
    );
    let flags: Vec<u8> = verdicts.iter().map(|v| v.nsfw as u8).collect();
    assert_eq!(flags, g["has_nsfw_concept"].to_vec1::<u8>().unwrap());
    let adjusted: Vec<u8> = verdicts.iter().map(|v| v.special_care as u8).collect();
    assert_eq!(
        adjusted,
        g["special_care_adjusted"].to_vec1::<u8>().unwrap()
    );
    // The fixture is built so both outcomes are exercised.
    assert!(flags.contains(&1) && flags.contains(&0), "{flags:?}");
}

#[test]
fn decoded_images_through_the_feature_extractor_match_diffusers() {
    let g = goldens();
    let processor = ClipImageProcessor::from_config_file(
        fixtures().join("tiny/sd15/feature_extractor/preprocessor_config.json"),
    )
    .unwrap();
    let images = images(&g);
    let pixels = processor.preprocess(&images, &Device::Cpu).unwrap();
    let diff = (&pixels - &g["pixel_values"])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff <= 1e-5, "pixel_values max abs diff {diff}");

    let verdicts = checker()
        .check_images(&processor, &images, &Device::Cpu)
        .unwrap();
    let flags: Vec<u8> = verdicts.iter().map(|v| v.nsfw as u8).collect();
    assert_eq!(flags, g["has_nsfw_concept"].to_vec1::<u8>().unwrap());
    let concept: Vec<Vec<f32>> = verdicts.iter().map(|v| v.concept_cos.clone()).collect();
    assert_close("concept_cos", &concept, &g["concept_cos"], 1e-4);
}

#[test]
fn batch_results_equal_one_by_one_results() {
    let g = goldens();
    let c = checker();
    let pixels = &g["pixel_values"];
    let batch = c.check(pixels).unwrap();
    for (i, verdict) in batch.iter().enumerate() {
        let single = c.check(&pixels.narrow(0, i, 1).unwrap()).unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].nsfw, verdict.nsfw, "image {i}");
        for (a, b) in single[0].concept_cos.iter().zip(&verdict.concept_cos) {
            assert!((a - b).abs() <= 1e-5, "image {i}: {a} vs {b}");
        }
    }
}

#[test]
fn config_reads_top_level_projection_dim_and_vision_config() {
    let cfg =
        SafetyCheckerConfig::from_file(fixtures().join("tiny/sd15/safety_checker/config.json"))
            .unwrap();
    let g = goldens();
    assert_eq!(cfg.projection_dim, g["image_embeds"].dim(1).unwrap());
    assert_eq!(cfg.vision.hidden_size, g["pooled_output"].dim(1).unwrap());
}

#[test]
fn missing_weights_name_the_folder_and_the_files_looked_for() {
    let dir = std::env::temp_dir().join(format!("headshot-safety-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join("tiny/sd15/safety_checker/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let err = SafetyChecker::from_folder(&dir, &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        err.contains("model.safetensors") && err.contains(&dir.display().to_string()),
        "{err}"
    );
}
