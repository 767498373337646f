//! Timestep embedding: sinusoidal projection (`time_proj`) + MLP (`time_embedding`).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

/// diffusers `Timesteps` + `TimestepEmbedding` (`linear_1`, SiLU, `linear_2`).
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    /// `exp(-ln(10000) * i / (half - shift))`, computed once at load (f32, like torch).
    frequencies: Tensor,
    flip_sin_to_cos: bool,
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    /// `vb` is the UNet root (weights under `time_embedding.linear_{1,2}`).
    pub fn load(
        vb: VarBuilder,
        channels: usize,
        embed_dim: usize,
        flip_sin_to_cos: bool,
        freq_shift: f64,
    ) -> Result<Self> {
        if !channels.is_multiple_of(2) {
            candle_core::bail!("timestep projection width {channels} must be even");
        }
        let half = channels / 2;
        // Same f32 arithmetic order as diffusers' get_timestep_embedding.
        let denominator = half as f32 - freq_shift as f32;
        let log_period = -(10000f32).ln();
        let frequencies: Vec<f32> = (0..half)
            .map(|i| (log_period * i as f32 / denominator).exp())
            .collect();
        let frequencies = Tensor::from_vec(frequencies, (1, half), vb.device())?;
        let vb = vb.pp("time_embedding");
        Ok(Self {
            frequencies,
            flip_sin_to_cos,
            linear_1: linear(channels, embed_dim, vb.pp("linear_1"))?,
            linear_2: linear(embed_dim, embed_dim, vb.pp("linear_2"))?,
        })
    }

    /// Embedding `[1, embed_dim]` of one timestep, in `dtype` (it broadcasts over the batch).
    pub fn forward(&self, timestep: f64, dtype: DType) -> Result<Tensor> {
        let args = (&self.frequencies * timestep as f32 as f64)?;
        let (sin, cos) = (args.sin()?, args.cos()?);
        let emb = if self.flip_sin_to_cos {
            Tensor::cat(&[cos, sin], 1)?
        } else {
            Tensor::cat(&[sin, cos], 1)?
        };
        let emb = emb.to_dtype(dtype)?;
        let emb = self.linear_1.forward(&emb)?.silu()?;
        self.linear_2.forward(&emb)
    }
}
