//! transformers' CLIPImageProcessor (PIL bicubic) goldens from `tests/fixtures/goldens/clip_preprocess.safetensors`.

use headshot_test_support::tensors::max_abs_diff;
use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use headshot_core::RgbImage;
use headshot_models::clip_preprocess::{ClipImageProcessor, ClipImageProcessorConfig};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn goldens() -> HashMap<String, Tensor> {
    let path = fixtures().join("goldens/clip_preprocess.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// An HWC uint8 tensor as our image type.
fn rgb_image(hwc: &Tensor) -> RgbImage {
    let (h, w, c) = hwc.dims3().unwrap();
    assert_eq!(c, 3);
    RgbImage {
        width: w as u32,
        height: h as u32,
        pixels: hwc.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
    }
}

fn sd15_processor() -> ClipImageProcessor {
    ClipImageProcessor::from_config_file(
        fixtures().join("tiny/sd15/feature_extractor/preprocessor_config.json"),
    )
    .expect("the SD1.5 feature extractor config loads")
}

#[test]
fn sd15_feature_extractor_config_equals_clip_defaults() {
    assert_eq!(
        sd15_processor().config(),
        &ClipImageProcessorConfig::default()
    );
}

#[test]
fn square_224_image_matches_transformers() {
    let g = goldens();
    let image = rgb_image(&g["image_224_u8"]);
    let processor = sd15_processor();
    // A 224x224 image goes through unresized and uncropped.
    assert_eq!(processor.resize_and_crop(&image), image);
    let pixels = processor.preprocess(&[image], &Device::Cpu).unwrap();
    let diff = max_abs_diff(&pixels, &g["pixel_values_224"]);
    assert!(diff <= 1e-5, "max abs diff {diff}");
}

#[test]
fn tall_512x768_image_matches_transformers() {
    let g = goldens();
    let image = rgb_image(&g["image_512x768_u8"]);
    assert_eq!((image.width, image.height), (512, 768));
    let pixels = sd15_processor().preprocess(&[image], &Device::Cpu).unwrap();
    assert_eq!(pixels.dims(), &[1, 3, 224, 224]);
    let diff = max_abs_diff(&pixels, &g["pixel_values_512x768"]);
    assert!(diff <= 1e-5, "max abs diff {diff}");
}

#[test]
fn batch_stacks_images_in_order() {
    let g = goldens();
    let images = [
        rgb_image(&g["image_512x768_u8"]),
        rgb_image(&g["image_224_u8"]),
    ];
    let pixels = sd15_processor().preprocess(&images, &Device::Cpu).unwrap();
    let expected = Tensor::cat(&[&g["pixel_values_512x768"], &g["pixel_values_224"]], 0).unwrap();
    let diff = max_abs_diff(&pixels, &expected);
    assert!(diff <= 1e-5, "max abs diff {diff}");
}

#[test]
fn malformed_images_are_errors_not_panics() {
    let processor = sd15_processor();
    let short = RgbImage {
        width: 4,
        height: 4,
        pixels: vec![0; 10],
    };
    assert!(processor.preprocess(&[short], &Device::Cpu).is_err());
    let empty = RgbImage {
        width: 0,
        height: 4,
        pixels: vec![],
    };
    assert!(processor.preprocess(&[empty], &Device::Cpu).is_err());
    assert!(processor.preprocess(&[], &Device::Cpu).is_err());
}
