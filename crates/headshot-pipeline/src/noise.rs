//! Per-job initial noise from a seeded CPU generator.
//!
//! The generator is ChaCha8 (`rand_chacha::ChaCha8Rng::seed_from_u64(seed)`) and the values are
//! `rand_distr::StandardNormal` f32 samples, drawn in row-major order of
//! `[samples, channels, height / 8, width / 8]`. It runs on the CPU and only depends on the
//! job's own seed and shape, so a seed gives the same image whatever else is batched with it
//! and on whichever device the model runs. (Torch's generator cannot be reproduced outside
//! torch; parity tests inject the reference's latents instead.)

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Initial latents `[samples, channels, height, width]` (latent, not pixel, size) as f32 on `device`.
pub fn initial_latents(
    seed: u64,
    samples: usize,
    channels: usize,
    height: usize,
    width: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len = samples * channels * height * width;
    let values: Vec<f32> = (0..len)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Tensor::from_vec(values, (samples, channels, height, width), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_and_samples_extend_the_stream() {
        let a = initial_latents(42, 1, 4, 8, 8, &Device::Cpu).unwrap();
        let b = initial_latents(42, 2, 4, 8, 8, &Device::Cpu).unwrap();
        let c = initial_latents(43, 1, 4, 8, 8, &Device::Cpu).unwrap();
        let a_v = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b_v = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let c_v = c.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a_v[..], b_v[..a_v.len()]);
        assert_ne!(a_v, c_v);
        // Roughly standard normal.
        let mean = b_v.iter().sum::<f32>() / b_v.len() as f32;
        let var = b_v.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / b_v.len() as f32;
        assert!(
            mean.abs() < 0.15 && (var - 1.0).abs() < 0.2,
            "mean {mean} var {var}"
        );
    }
}
