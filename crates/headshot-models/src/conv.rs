//! 2-D convolution for the UNet and the VAE.
//!
//! On the CPU (f32) convolutions run on our own kernel: output pixels are taken in tiles, each
//! tile's patch matrix is built from contiguous row copies of the NCHW input, and one `gemm`
//! per tile writes straight into the NCHW output with the bias already in place. candle 0.11's
//! CPU path transposes the whole input to NHWC on one thread, gathers patches element by
//! element and scatters the result back, which made it most of a VAE decode. Other devices use
//! candle's `conv2d` (cuDNN with the `cudnn` feature).

mod cpu_kernel;

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::cpu_storage::contiguous_f32;

pub use cpu_kernel::ConvGeometry;

/// A square-kernel convolution with optional bias, weights `[out, in, k, k]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads `weight` (and `bias` when `bias` is set) from `vb`.
    pub fn load(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = vb.get((out_channels, in_channels, kernel, kernel), "weight")?;
        let bias = if bias {
            Some(vb.get(out_channels, "bias")?)
        } else {
            None
        };
        Ok(Self::new(weight, bias, stride, padding))
    }

    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Self {
        Self {
            weight,
            bias,
            stride,
            padding,
        }
    }

    /// candle's own convolution, the path every non-CPU device takes.
    pub fn forward_with_candle(&self, x: &Tensor) -> Result<Tensor> {
        let out = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(bias) => out.broadcast_add(&bias.reshape((1, bias.dim(0)?, 1, 1))?),
            None => Ok(out),
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 {
            return self.forward_with_candle(x);
        }
        let (_, _, kernel_h, kernel_w) = self.weight.dims4()?;
        let bias = match &self.bias {
            Some(bias) => bias.to_dtype(DType::F32)?,
            None => Tensor::zeros(self.weight.dim(0)?, DType::F32, &Device::Cpu)?,
        };
        let op = CpuConv2d {
            stride: self.stride,
            padding: self.padding,
            kernel: (kernel_h, kernel_w),
        };
        x.contiguous()?.apply_op3_no_bwd(
            &self.weight.to_dtype(DType::F32)?.contiguous()?,
            &bias,
            &op,
        )
    }
}

struct CpuConv2d {
    stride: usize,
    padding: usize,
    kernel: (usize, usize),
}

impl CustomOp3 for CpuConv2d {
    fn name(&self) -> &'static str {
        "cpu-conv2d"
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
        let (batch, in_channels, height, width) = x_layout.shape().dims4()?;
        let (out_channels, w_in, kernel_h, kernel_w) = w_layout.shape().dims4()?;
        if w_in != in_channels || (kernel_h, kernel_w) != self.kernel {
            candle_core::bail!(
                "conv2d: input {:?} does not fit weight {:?}",
                x_layout.shape(),
                w_layout.shape()
            );
        }
        let geometry = ConvGeometry {
            batch,
            in_channels,
            out_channels,
            height,
            width,
            kernel_h,
            kernel_w,
            stride: self.stride,
            padding: self.padding,
        };
        let (out_h, out_w) = geometry.output_size().ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "conv2d: a {kernel_h}x{kernel_w} kernel with padding {} does not fit a \
                 {height}x{width} input",
                self.padding
            ))
        })?;
        let out = cpu_kernel::conv2d(
            contiguous_f32(x_storage, x_layout, "conv2d", "input")?,
            contiguous_f32(w_storage, w_layout, "conv2d", "weight")?,
            contiguous_f32(b_storage, b_layout, "conv2d", "bias")?,
            geometry,
        );
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, out_channels, out_h, out_w)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::{max_abs_diff, uniform};

    fn random(dims: &[usize], seed: u64) -> Tensor {
        uniform(dims, seed, -1.0, 2.0)
    }

    #[test]
    fn matches_candle_for_every_shape_the_models_use_and_odd_ones() {
        // (batch, in, out, h, w, kernel, stride, padding)
        for &(b, cin, cout, h, w, k, s, p) in &[
            (2, 4, 8, 16, 16, 3, 1, 1),
            (1, 3, 5, 7, 9, 3, 1, 1),
            (2, 6, 6, 9, 7, 3, 2, 1),
            (1, 6, 6, 10, 10, 3, 2, 0),
            (3, 8, 4, 5, 11, 1, 1, 0),
            (1, 2, 3, 4, 4, 3, 1, 0),
            (1, 16, 16, 64, 64, 3, 1, 1),
            (1, 5, 7, 1, 1, 1, 1, 0),
            (1, 2, 2, 3, 3, 5, 1, 2),
        ] {
            let x = random(&[b, cin, h, w], 1);
            let weight = random(&[cout, cin, k, k], 2);
            let bias = random(&[cout], 3);
            for conv in [
                Conv2d::new(weight.clone(), Some(bias.clone()), s, p),
                Conv2d::new(weight.clone(), None, s, p),
            ] {
                let ours = conv.forward(&x).unwrap();
                let reference = conv.forward_with_candle(&x).unwrap();
                assert_eq!(
                    ours.dims(),
                    reference.dims(),
                    "{b}x{cin}x{h}x{w} k{k} s{s} p{p}"
                );
                let diff = max_abs_diff(&ours, &reference);
                assert!(diff < 1e-5, "{b}x{cin}x{h}x{w} k{k} s{s} p{p}: {diff}");
            }
        }
    }

    #[test]
    fn strided_input_is_accepted_and_a_kernel_larger_than_the_input_is_an_error() {
        let x = random(&[1, 4, 6, 6], 4).transpose(2, 3).unwrap();
        let conv = Conv2d::new(random(&[2, 4, 3, 3], 5), None, 1, 1);
        let diff = max_abs_diff(
            &conv.forward(&x).unwrap(),
            &conv.forward_with_candle(&x).unwrap(),
        );
        assert!(diff < 1e-5);
        let tiny = random(&[1, 4, 2, 2], 6);
        let err = Conv2d::new(random(&[2, 4, 5, 5], 7), None, 1, 0)
            .forward(&tiny)
            .unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}
