//! Safety checker cost per image on CPU: preprocessing (PIL-exact resize + crop) and the checker
//! itself on the tiny fixture model. Set HEADSHOT_SAFETY_CHECKER_DIR to a real
//! `safety_checker/` folder (e.g. CompVis/stable-diffusion-safety-checker) to time it as well.
//! The same measurement for diffusers: `tools/fixtures/bench_safety.py`.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use headshot_core::RgbImage;
use headshot_models::clip_preprocess::ClipImageProcessor;
use headshot_models::safety_checker::SafetyChecker;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A deterministic 512x768 picture with some structure (the size of a head shot output).
fn picture(width: u32, height: u32, seed: u32) -> RgbImage {
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let v = x
                .wrapping_mul(31)
                .wrapping_add(y.wrapping_mul(17))
                .wrapping_add(seed.wrapping_mul(101));
            pixels.extend_from_slice(&[
                (x * 255 / width) as u8,
                (y * 255 / height) as u8,
                (v % 251) as u8,
            ]);
        }
    }
    RgbImage {
        width,
        height,
        pixels,
    }
}

fn bench_checker(c: &mut Criterion, name: &str, dir: PathBuf) {
    let device = Device::Cpu;
    let checker = SafetyChecker::from_folder(&dir, &device, DType::F32)
        .unwrap_or_else(|e| panic!("loading the safety checker from {}: {e}", dir.display()));
    let size = checker.image_size();
    let mut group = c.benchmark_group(format!("safety_checker/{name}"));
    group.sample_size(10);
    for batch in [1usize, 2] {
        let pixels = Tensor::randn(0f32, 1.0, (batch, 3, size, size), &device).unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("check", batch), &pixels, |b, pixels| {
            b.iter(|| checker.check(pixels).unwrap())
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let processor = ClipImageProcessor::from_config_file(
        fixtures().join("tiny/sd15/feature_extractor/preprocessor_config.json"),
    )
    .expect("fixture feature extractor config");
    let mut group = c.benchmark_group("clip_preprocess");
    for (w, h) in [(512u32, 768u32), (512, 512), (224, 224)] {
        let image = picture(w, h, 1);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("preprocess", format!("{w}x{h}")), |b| {
            b.iter(|| {
                processor
                    .preprocess(std::slice::from_ref(&image), &Device::Cpu)
                    .unwrap()
            })
        });
    }
    group.finish();

    bench_checker(c, "tiny", fixtures().join("tiny/sd15/safety_checker"));
    if let Some(dir) = std::env::var_os("HEADSHOT_SAFETY_CHECKER_DIR") {
        bench_checker(c, "real", PathBuf::from(dir));
    }
}

criterion_group!(safety, benches);
criterion_main!(safety);
