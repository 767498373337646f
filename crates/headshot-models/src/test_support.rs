//! Helpers for the unit tests of our CPU kernels.

use candle_core::{Device, Tensor};

/// Deterministic values uniform in `[low, low + span)` (a small LCG: no global RNG involved).
pub(crate) fn uniform(dims: &[usize], seed: u64, low: f32, span: f32) -> Tensor {
    let count: usize = dims.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let data: Vec<f32> = (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            low + ((state >> 40) as f32 / (1u64 << 24) as f32) * span
        })
        .collect();
    Tensor::from_vec(data, dims, &Device::Cpu).expect("test tensor")
}

pub(crate) use headshot_test_support::tensors::max_abs_diff;
