//! Encoders on the tiny fixture model set (CPU, f32): the FaceID image encoder's
//! `hidden_states[-2]` for the [uncond, cond] pair the pipeline runs, the FaceID projection, the
//! text encoder for [negative, prompt], and the VAE decode of one 512x512 image (64x64 latents).

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use criterion::{criterion_group, criterion_main, Criterion};
use headshot_models::clip_text::{ClipTextConfig, ClipTextEncoder};
use headshot_models::clip_vision::{ClipVisionConfig, ClipVisionOutputs, ClipVisionTransformer};
use headshot_models::face_projection::FaceIdPlusProjection;
use headshot_models::tokenizer::ClipTokenizer;
use headshot_models::vae::{VaeConfig, VaeDecoder};

fn tiny(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(rel)
}

fn weights(rel: &str) -> VarBuilder<'static> {
    // SAFETY: the fixture files are not modified while mapped.
    unsafe { VarBuilder::from_mmaped_safetensors(&[tiny(rel)], DType::F32, &Device::Cpu) }
        .expect("tiny weights")
}

fn clip_vision(c: &mut Criterion) {
    let cfg = ClipVisionConfig::from_file(tiny("image_encoder/config.json")).expect("config");
    let tower = ClipVisionTransformer::load_for(
        weights("image_encoder/model.safetensors").pp("vision_model"),
        &cfg,
        ClipVisionOutputs::PenultimateOnly,
    )
    .expect("image encoder");
    let pixels = Tensor::randn(0f32, 1.0, (2, 3, 224, 224), &Device::Cpu).expect("pixels");
    c.bench_function("clip_vision_tiny_penultimate_batch2", |b| {
        b.iter(|| tower.penultimate_hidden_states(&pixels).expect("forward"))
    });

    let ip = candle_core::pickle::read_all_with_key(
        tiny("ip-adapter/ip-adapter-faceid-plusv2_sd15.bin"),
        Some("image_proj"),
    )
    .expect("adapter");
    let projection = FaceIdPlusProjection::load_inferred(VarBuilder::from_tensors(
        ip.into_iter().collect(),
        DType::F32,
        &Device::Cpu,
    ))
    .expect("projection");
    let features = tower.penultimate_hidden_states(&pixels).expect("features");
    let ids = Tensor::randn(0f32, 1.0, (2, 512), &Device::Cpu).expect("ids");
    c.bench_function("face_projection_tiny_batch2", |b| {
        b.iter(|| projection.forward(&ids, &features, 1.0).expect("forward"))
    });
}

fn clip_text(c: &mut Criterion) {
    let cfg = ClipTextConfig::from_file(tiny("sd15/text_encoder/config.json")).expect("config");
    let encoder = ClipTextEncoder::load(weights("sd15/text_encoder/model.safetensors"), &cfg)
        .expect("text encoder");
    let tokenizer = ClipTokenizer::from_folder(tiny("sd15/tokenizer")).expect("tokenizer");
    let rows = vec![
        tokenizer
            .encode("anime, cartoon, drawing, big nose, ugly, blurry")
            .expect("tokens"),
        tokenizer.encode("pretty woman").expect("tokens"),
    ];
    let ids = Tensor::new(rows, &Device::Cpu).expect("ids");
    c.bench_function("tokenize_prompt", |b| {
        b.iter(|| {
            tokenizer
                .encode("pretty woman, portrait, best quality")
                .expect("tokens")
        })
    });
    c.bench_function("clip_text_tiny_batch2", |b| {
        b.iter(|| encoder.forward(&ids).expect("forward"))
    });
}

fn vae_decode(c: &mut Criterion) {
    let cfg = VaeConfig::from_file(tiny("vae-ft-mse/config.json")).expect("config");
    let vae = VaeDecoder::load(
        weights("vae-ft-mse/diffusion_pytorch_model.safetensors"),
        &cfg,
    )
    .expect("vae");
    let latents = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &Device::Cpu).expect("latents");
    let mut group = c.benchmark_group("vae_decode_tiny");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("512x512", |b| {
        b.iter(|| vae.decode_to_unit_range(&latents).expect("decode"))
    });
    group.finish();
}

criterion_group!(benches, clip_vision, clip_text, vae_decode);
criterion_main!(benches);
