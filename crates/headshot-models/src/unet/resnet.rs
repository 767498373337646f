//! ResnetBlock2D and the resolution changes between blocks.

use candle_core::{Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

use crate::conv::Conv2d;
use crate::group_norm::GroupNorm;

pub(crate) fn conv(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d> {
    Conv2d::load(vb, cin, cout, kernel, stride, padding, true)
}

/// diffusers `ResnetBlock2D` with the default time-embedding handling (added after conv1);
/// the VAE's blocks have no time embedding.
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
        output_scale_factor: f64,
    ) -> Result<Self> {
        let conv_shortcut = if in_channels != out_channels {
            Some(conv(
                vb.pp("conv_shortcut"),
                in_channels,
                out_channels,
                1,
                1,
                0,
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::load(vb.pp("norm1"), groups, in_channels, eps)?,
            conv1: conv(vb.pp("conv1"), in_channels, out_channels, 3, 1, 1)?,
            time_emb_proj: match temb_channels {
                Some(temb) => Some(linear(temb, out_channels, vb.pp("time_emb_proj"))?),
                None => None,
            },
            norm2: GroupNorm::load(vb.pp("norm2"), groups, out_channels, eps)?,
            conv2: conv(vb.pp("conv2"), out_channels, out_channels, 3, 1, 1)?,
            conv_shortcut,
            output_scale_factor,
        })
    }

    /// `temb_act` is SiLU(timestep embedding), `[1 or B, temb]`, computed once per step by the
    /// UNet; `None` for the VAE.
    pub fn forward(&self, x: &Tensor, temb_act: Option<&Tensor>) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = match (&self.time_emb_proj, temb_act) {
            (Some(proj), Some(temb)) => {
                h.broadcast_add(&proj.forward(temb)?.unsqueeze(2)?.unsqueeze(3)?)?
            }
            (None, None) => h,
            (Some(_), None) => candle_core::bail!("this resnet block needs a time embedding"),
            (None, Some(_)) => candle_core::bail!("this resnet block has no time_emb_proj"),
        };
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let out = (shortcut + h)?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }
}

/// `downsamplers.0`: 3x3 stride-2 convolution.
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
    /// diffusers pads (0,1,0,1) itself when `downsample_padding` is 0.
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn load(vb: VarBuilder, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: conv(vb.pp("conv"), channels, channels, 3, 2, padding)?,
            pad_right_bottom: padding == 0,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let x = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// `upsamplers.0`: nearest-neighbour upsampling then a 3x3 convolution.
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv(vb.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    /// Upsamples to `(height, width)`: twice the input unless the matching skip connection is
    /// odd-sized, which is what diffusers' `upsample_size` does.
    pub fn forward(&self, x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
        self.conv.forward(&x.upsample_nearest2d(height, width)?)
    }
}
