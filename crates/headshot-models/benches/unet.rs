//! One UNet step on the tiny fixture model set (CPU, f32): plain SD, with the FaceID adapter, and
//! with the adapter plus a user LoRA (tests/fixtures/tiny/loras/tiny-style) merged in, at
//! 512x512 (64x64 latents) with the classifier-free-guidance batch of 2; and what merging that
//! LoRA costs (deltas plus rebuilding the UNet over the shared base tensors). Dropping a merged
//! set is the whole unmerge: the base UNet was never changed.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use criterion::{criterion_group, criterion_main, Criterion};
use headshot_models::ip_adapter::IpAdapterWeights;
use headshot_models::lora::{LoraFile, LoraTargets};
use headshot_models::recorded_weights::record;
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
    let (recording_vb, recording) = record(vb);
    let adapted =
        UNet2DConditionModel::load(recording_vb, &cfg, Some(attachment)).expect("adapted unet");
    let targets = LoraTargets::unet(recording.finish());
    let lora = LoraFile::load(tiny().join("loras/tiny-style.safetensors")).expect("tiny lora");
    let merge = || {
        let merged = targets.merged(&[(&lora, 0.7)]).expect("merging the LoRA");
        let vb = targets
            .weights()
            .var_builder_with(merged, DType::F32, &device);
        UNet2DConditionModel::load(vb, &cfg, Some(attachment)).expect("UNet with the LoRA")
    };
    let with_lora = merge();

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
    group.bench_function("faceid_adapter_with_user_lora", |b| {
        b.iter(|| {
            with_lora
                .forward(&latents, 981.0, &context)
                .expect("forward")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("user_lora_tiny");
    group.sample_size(20);
    group.bench_function("merge_into_unet", |b| b.iter(merge));
    group.bench_function("merge_and_drop", |b| b.iter(|| drop(merge())));
    group.finish();
}

criterion_group!(benches, unet_step);
criterion_main!(benches);
