//! Per-job initial noise from a seeded CPU generator.
//!
//! The generator is ChaCha8 (`rand_chacha::ChaCha8Rng::seed_from_u64(seed)`) and the values are
//! `rand_distr::StandardNormal` f32 samples, drawn in row-major order of
//! `[samples, channels, height / 8, width / 8]`. It runs on the CPU and only depends on the
//! job's own seed and shape, so a seed gives the same image whatever else is batched with it
//! and on whichever device the model runs. (Torch's generator cannot be reproduced outside
//! torch; parity tests inject the reference's latents instead.)

use candle_core::{Device, Tensor};
use headshot_core::JobSettings;
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

/// The per-step noise of one job: drawn from its seeds, or given (parity tests).
pub(crate) enum JobStepNoise {
    /// One stream per seed, each giving `images` images of `[channels, height, width]`.
    Seeded {
        streams: Vec<(ChaCha8Rng, usize)>,
        cell: [usize; 3],
    },
    /// `[steps, samples, channels, height, width]`.
    Given(Tensor),
}

impl JobStepNoise {
    /// The job's streams: its seed, or its candidates' seeds (one image each).
    pub fn seeded(job: &JobSettings, cell: [usize; 3]) -> Self {
        let stream = |seed: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(1);
            rng
        };
        let streams = match job.image_seeds() {
            Some(seeds) => seeds.iter().map(|&s| (stream(s), 1)).collect(),
            None => vec![(stream(job.seed), job.images())],
        };
        JobStepNoise::Seeded { streams, cell }
    }

    /// The noise of step `step`: `[samples, channels, height, width]` f32 on `device`.
    pub fn next(&mut self, step: usize, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            JobStepNoise::Given(all) => all.get(step)?.to_device(device),
            JobStepNoise::Seeded { streams, cell } => {
                let [c, h, w] = *cell;
                let images: usize = streams.iter().map(|(_, n)| n).sum();
                let mut values = Vec::with_capacity(images * c * h * w);
                for (rng, n) in streams.iter_mut() {
                    values
                        .extend((0..*n * c * h * w).map(|_| rng.sample::<f32, _>(StandardNormal)));
                }
                Tensor::from_vec(values, (images, c, h, w), device)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_noise_is_per_job_and_not_the_initial_stream() {
        let job = |seed| JobSettings {
            samples: 2,
            ..headshot_test_support::settings(seed)
        };
        let mut a = JobStepNoise::seeded(&job(42), [4, 8, 8]);
        let mut again = JobStepNoise::seeded(&job(42), [4, 8, 8]);
        let mut other = JobStepNoise::seeded(&job(43), [4, 8, 8]);
        let values = |n: &mut JobStepNoise| {
            n.next(0, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let first = values(&mut a);
        assert_eq!(first, values(&mut again));
        assert_ne!(first, values(&mut other));
        assert_ne!(first, values(&mut a), "each step draws anew");
        let initial = initial_latents(42, 2, 4, 8, 8, &Device::Cpu).unwrap();
        assert_ne!(
            first,
            initial.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

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
