//! Full 21-step jobs (CFG, one sample) on the tiny model set, CPU f32, from an analysed face (no
//! ONNX): text + CLIP encoding, 21 UNet steps on a CFG batch of 2, VAE decode, 8-bit conversion.
//! 512x512 is the API default; 256x256 shows how the cost scales with the latent size.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use headshot_core::{JobSettings, PreparedFace, RgbImage};
use headshot_pipeline::{Pipeline, PipelineConfig, RenderOptions};

fn tiny_pipeline() -> Pipeline {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny.toml");
    let mut config = PipelineConfig::new(manifest);
    config.load_face_analyzer = false;
    config.resolve.allow_download = false;
    Pipeline::load(&config).expect("tiny model set loads")
}

fn face() -> PreparedFace {
    let mut id_embedding: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let norm = id_embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
    id_embedding.iter_mut().for_each(|v| *v /= norm);
    let pixels = (0..224 * 224 * 3).map(|i| (i % 251) as u8).collect();
    PreparedFace {
        id_embedding,
        aligned_224: RgbImage {
            width: 224,
            height: 224,
            pixels,
        },
        faces_found: 1,
        more_aligned_224: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let pipeline = tiny_pipeline();
    let face = face();
    let base = JobSettings {
        prompt: "pretty woman".into(),
        negative_prompt: "blurry, low quality".into(),
        width: 256,
        height: 256,
        num_inference_steps: 21,
        guidance_scale: 7.5,
        s_scale: 1.0,
        samples: 1,
        seed: 1,
        safety_checker: None,
        face_index: 0,
        candidates: 0,
        model: Default::default(),
    };
    let sizes = [256u32, 512];
    let mut group = c.benchmark_group("tiny_cpu");
    group.sample_size(10);
    for size in sizes {
        let request = JobSettings {
            width: size,
            height: size,
            ..base.clone()
        };
        group.bench_function(format!("job_{size}x{size}_21_steps_cfg"), |b| {
            // The serving path: no trace.
            let options = RenderOptions::default();
            b.iter(|| pipeline.render(&request, &face, &options).expect("render"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
