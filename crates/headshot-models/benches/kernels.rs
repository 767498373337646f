//! Our CPU kernels at full-size SD1.5 shapes (random data, f32), beside candle's own ops:
//! self-attention at 64x64 latents (CFG batch 2, 8 heads of 40), a 320-channel 3x3
//! convolution and GroupNorm+SiLU at 64x64. `tools/bench/bench_kernels.py` times torch on the
//! same shapes.

use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use headshot_models::attention::{attend_in_query_slices, scaled_dot_product};
use headshot_models::conv::Conv2d;
use headshot_models::group_norm::GroupNorm;

fn random(dims: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1.0, dims, &Device::Cpu).expect("random tensor")
}

fn kernels(c: &mut Criterion) {
    let mut group = c.benchmark_group("sd15_full_size_64x64");
    group.sample_size(10);

    let (q, k, v) = (
        random(&[16, 4096, 40]),
        random(&[16, 4096, 40]),
        random(&[16, 4096, 40]),
    );
    let scale = 40f64.powf(-0.5);
    group.bench_function("self_attention_fused", |b| {
        b.iter(|| scaled_dot_product(&q, &k, &v, scale, false).expect("attention"))
    });
    group.bench_function("self_attention_candle_ops", |b| {
        b.iter(|| attend_in_query_slices(&q, &k, &v, scale).expect("attention"))
    });

    let x = random(&[2, 320, 64, 64]);
    let conv = Conv2d::new(random(&[320, 320, 3, 3]), Some(random(&[320])), 1, 1);
    group.bench_function("conv3x3_320_ours", |b| {
        b.iter(|| conv.forward(&x).expect("conv"))
    });
    group.bench_function("conv3x3_320_candle", |b| {
        b.iter(|| conv.forward_with_candle(&x).expect("conv"))
    });

    let norm = GroupNorm::new(random(&[320]), random(&[320]), 32, 1e-5).expect("norm");
    group.bench_function("group_norm_silu_320_ours", |b| {
        b.iter(|| norm.forward_silu(&x).expect("norm"))
    });
    group.bench_function("group_norm_silu_320_candle", |b| {
        b.iter(|| norm.forward_with_candle(&x, true).expect("norm"))
    });
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
