//! GroupNorm, optionally followed by SiLU (every ResNet block does both).
//!
//! On the CPU (f32) it is one fused kernel: per (sample, group) the mean and variance in f64,
//! then one pass that writes `silu(x * a + b)` with per-channel `a`, `b`. candle_nn's GroupNorm
//! is a chain of about ten tensor ops plus a separate SiLU with scalar `expf`.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::cpu_storage::contiguous_f32;
use crate::fast_math::{silu, with_best_simd};

/// `GroupNorm(groups, channels, eps)` with affine weight and bias.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn load(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        let weight = vb.get(channels, "weight")?;
        let bias = vb.get(channels, "bias")?;
        Self::new(weight, bias, groups, eps)
    }

    pub fn new(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> Result<Self> {
        let channels = weight.dim(0)?;
        let inner = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
        Ok(Self {
            inner,
            weight,
            bias,
            groups,
            eps,
        })
    }

    /// `silu(group_norm(x))`.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    /// candle_nn's GroupNorm (and SiLU), the path of every non-CPU device.
    pub fn forward_with_candle(&self, x: &Tensor, then_silu: bool) -> Result<Tensor> {
        let y = self.inner.forward(x)?;
        if then_silu {
            y.silu()
        } else {
            Ok(y)
        }
    }

    fn run(&self, x: &Tensor, then_silu: bool) -> Result<Tensor> {
        if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 || x.rank() < 2 {
            return self.forward_with_candle(x, then_silu);
        }
        let dims = x.dims();
        let channels = dims[1];
        if channels != self.weight.dim(0)? || !channels.is_multiple_of(self.groups) {
            candle_core::bail!(
                "group norm over {channels} channels in {} groups, weights for {}",
                self.groups,
                self.weight.dim(0)?
            );
        }
        let op = CpuGroupNorm {
            groups: self.groups,
            eps: self.eps,
            then_silu,
        };
        x.contiguous()?.apply_op3_no_bwd(
            &self.weight.to_dtype(DType::F32)?,
            &self.bias.to_dtype(DType::F32)?,
            &op,
        )
    }
}

struct CpuGroupNorm {
    groups: usize,
    eps: f64,
    then_silu: bool,
}

impl CustomOp3 for CpuGroupNorm {
    fn name(&self) -> &'static str {
        "cpu-group-norm"
    }

    fn cpu_fwd(
        &self,
        x_storage: &CpuStorage,
        x_layout: &Layout,
        w_storage: &CpuStorage,
        w_layout: &Layout,
        b_storage: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = x_layout.shape().dims();
        let shape = GroupShape {
            channels_per_group: dims[1] / self.groups,
            spatial: dims[2..].iter().product(),
            groups: self.groups,
        };
        let out = normalise(
            contiguous_f32(x_storage, x_layout, "group norm", "input")?,
            contiguous_f32(w_storage, w_layout, "group norm", "weight")?,
            contiguous_f32(b_storage, b_layout, "group norm", "bias")?,
            shape,
            self.eps,
            self.then_silu,
        );
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, false)
    }
}

#[derive(Debug, Clone, Copy)]
struct GroupShape {
    channels_per_group: usize,
    spatial: usize,
    groups: usize,
}

fn normalise(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    shape: GroupShape,
    eps: f64,
    then_silu: bool,
) -> Vec<f32> {
    let group_len = shape.channels_per_group * shape.spatial;
    let mut out = vec![0f32; input.len()];
    if group_len == 0 {
        return out;
    }
    out.par_chunks_mut(group_len)
        .zip(input.par_chunks(group_len))
        .enumerate()
        .for_each(|(index, (out, input))| {
            let group = index % shape.groups;
            let (mean, inv_std) = moments(input, eps);
            let first_channel = group * shape.channels_per_group;
            for (c, (out, input)) in out
                .chunks_mut(shape.spatial)
                .zip(input.chunks(shape.spatial))
                .enumerate()
            {
                let channel = first_channel + c;
                let scale = inv_std * weight[channel] as f64;
                let shift = bias[channel] as f64 - mean * scale;
                affine(input, out, scale as f32, shift as f32, then_silu);
            }
        });
    out
}

/// Mean and `1/sqrt(var + eps)` (biased variance, as torch), accumulated in f64.
fn moments(values: &[f32], eps: f64) -> (f64, f64) {
    with_best_simd!(run(values: &[f32], eps: f64) -> (f64, f64) {
        const LANES: usize = 8;
        let n = values.len() as f64;
        let mut sums = [0f64; LANES];
        let mut chunks = values.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (sum, &x) in sums.iter_mut().zip(chunk) {
                *sum += x as f64;
            }
        }
        let tail: f64 = chunks.remainder().iter().map(|&x| x as f64).sum();
        let mean = (sums.iter().sum::<f64>() + tail) / n;
        let mut squares = [0f64; LANES];
        let mut chunks = values.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (square, &x) in squares.iter_mut().zip(chunk) {
                let d = x as f64 - mean;
                *square += d * d;
            }
        }
        let tail: f64 = chunks
            .remainder()
            .iter()
            .map(|&x| (x as f64 - mean) * (x as f64 - mean))
            .sum();
        let variance = (squares.iter().sum::<f64>() + tail) / n;
        (mean, 1.0 / (variance + eps).sqrt())
    })
}

/// `out = x * scale + shift`, then SiLU when asked.
fn affine(input: &[f32], out: &mut [f32], scale: f32, shift: f32, then_silu: bool) {
    with_best_simd!(run(input: &[f32], out: &mut [f32], scale: f32, shift: f32, then_silu: bool) {
        if then_silu {
            for (y, &x) in out.iter_mut().zip(input) {
                *y = silu(x * scale + shift);
            }
        } else {
            for (y, &x) in out.iter_mut().zip(input) {
                *y = x * scale + shift;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::{max_abs_diff, uniform};

    fn random(dims: &[usize], seed: u64) -> Tensor {
        uniform(dims, seed, -1.0, 4.0)
    }

    /// GroupNorm (+ SiLU) computed in f64 straight from the definition.
    fn definition(
        x: &[f32],
        weight: &[f32],
        bias: &[f32],
        dims: &[usize],
        groups: usize,
        silu: bool,
    ) -> Vec<f32> {
        let channels = dims[1];
        let spatial: usize = dims[2..].iter().product();
        let group_len = channels / groups * spatial;
        let mut out = Vec::with_capacity(x.len());
        for (g, chunk) in x.chunks(group_len).enumerate() {
            let n = chunk.len() as f64;
            let mean = chunk.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = chunk
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            for (i, &v) in chunk.iter().enumerate() {
                let c = (g % groups) * (channels / groups) + i / spatial;
                let y = (v as f64 - mean) / (var + 1e-6).sqrt() * weight[c] as f64 + bias[c] as f64;
                out.push(if silu { y / (1.0 + (-y).exp()) } else { y } as f32);
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_and_candle_with_and_without_silu() {
        for &(dims, groups) in &[
            (&[2usize, 8, 16, 16][..], 4usize),
            (&[1, 32, 7, 5][..], 32),
            (&[3, 6, 9][..], 2),
            (&[1, 4, 1, 1][..], 1),
        ] {
            let channels = dims[1];
            let (weight, bias) = (random(&[channels], 1), random(&[channels], 2));
            let norm = GroupNorm::new(weight.clone(), bias.clone(), groups, 1e-6).unwrap();
            let x = random(dims, 3);
            let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for then_silu in [false, true] {
                let ours = norm.run(&x, then_silu).unwrap();
                assert_eq!(ours.dims(), dims);
                let expected = definition(
                    &values(&x),
                    &values(&weight),
                    &values(&bias),
                    dims,
                    groups,
                    then_silu,
                );
                let worst = values(&ours)
                    .iter()
                    .zip(&expected)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 2e-6,
                    "{dims:?} groups {groups} silu {then_silu}: {worst}"
                );
                let candle = norm.forward_with_candle(&x, then_silu).unwrap();
                let diff = max_abs_diff(&ours, &candle);
                assert!(diff < 1e-4, "{dims:?} vs candle: {diff}");
            }
        }
    }

    #[test]
    fn a_large_offset_does_not_cost_precision() {
        // Variance around the mean, in f64: an offset of 1000 leaves the result unchanged.
        let norm = GroupNorm::new(random(&[8], 1), random(&[8], 2), 4, 1e-6).unwrap();
        let x = random(&[2, 8, 6, 6], 3);
        let shifted = (&x + 1000.0).unwrap();
        let diff = max_abs_diff(&norm.forward(&x).unwrap(), &norm.forward(&shifted).unwrap());
        assert!(diff < 5e-4, "{diff}");
    }

    #[test]
    fn channels_that_do_not_fit_the_weights_are_an_error() {
        let norm = GroupNorm::new(random(&[8], 1), random(&[8], 2), 4, 1e-5).unwrap();
        assert!(norm.forward(&random(&[1, 6, 2, 2], 3)).is_err());
    }
}
