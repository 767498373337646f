//! One UNet step on the tiny fixture model set (CPU, f32): plain SD and with the FaceID adapter,
//! at 512x512 (64x64 latents) with the classifier-free-guidance batch of 2.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use criterion::{criterion_group, criterion_main, Criterion};
use headshot_models::ip_adapter::IpAdapterWeights;
use headshot_models::unet::{IpAdapterAttachment, UNet2DConditionModel, UNetConfig};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny")
}

fn unet_step(c: &mut Criterion) {
    let device = Device::Cpu;
    let cfg =
        UNetConfig::from_file(&tiny().join("sd15/unet/config.json")).expect("tiny unet config");
    let weights = tiny().join("sd15/unet/diffusion_pytorch_model.safetensors");
    // SAFETY: the fixture file is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device) }
        .expect("tiny unet weights");
    let adapter =
        IpAdapterWeights::load(&tiny().join("ip-adapter/ip-adapter-faceid-plusv2_sd15.bin"))
            .expect("tiny adapter");
    let plain = UNet2DConditionModel::load(vb.clone(), &cfg, None).expect("plain unet");
    let attachment = IpAdapterAttachment {
        weights: &adapter,
        num_tokens: 4,
        scale: 1.0,
    };
    let adapted = UNet2DConditionModel::load(vb, &cfg, Some(attachment)).expect("adapted unet");

    let latents = Tensor::randn(0f32, 1.0, (2, cfg.in_channels, 64, 64), &device).expect("latents");
    let text = Tensor::randn(0f32, 1.0, (2, 77, cfg.cross_attention_dim), &device).expect("text");
    let context =
        Tensor::randn(0f32, 1.0, (2, 81, cfg.cross_attention_dim), &device).expect("context");

    let mut group = c.benchmark_group("unet_step_tiny_64x64_batch2");
    // A step takes seconds on CPU: few samples, each one step.
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(20));
    group.bench_function("plain", |b| {
        b.iter(|| plain.forward(&latents, 981.0, &text).expect("forward"))
    });
    group.bench_function("faceid_adapter", |b| {
        b.iter(|| adapted.forward(&latents, 981.0, &context).expect("forward"))
    });
    group.finish();
}

criterion_group!(benches, unet_step);
criterion_main!(benches);
