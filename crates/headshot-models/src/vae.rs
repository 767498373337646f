//! VAE decoder of an `AutoencoderKL` (`vae/config.json` + `diffusion_pytorch_model.safetensors`):
//! `post_quant_conv` then diffusers' `Decoder`. The encoder half is never loaded.
//!
//! The ResNet and up-sampling blocks are the UNet's (without a time embedding), so both run on
//! our CPU convolution. The mid-block attention is ours too: candle-transformers'
//! `AttentionBlock` mixes the samples of a batch (a batch-2 decode differs from two batch-1
//! decodes by up to 0.3 on the tiny fixture), and we need both the current
//! `to_q/to_k/to_v/to_out.0` keys and the legacy `query/key/value/proj_attn` ones.

use std::path::{Path, PathBuf};

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::conv::Conv2d;
use crate::group_norm::GroupNorm;
use crate::unet::resnet::{ResnetBlock2D, Upsample2D};
use serde::Deserialize;

/// diffusers' VAE blocks use this GroupNorm epsilon throughout the decoder.
const VAE_NORM_EPS: f64 = 1e-6;

/// Errors while reading `vae/config.json`.
#[derive(Debug, thiserror::Error)]
pub enum VaeConfigError {
    #[error("cannot read VAE config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("VAE config {path} is not a valid AutoencoderKL config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("VAE config {path}: {message}")]
    Unsupported { path: PathBuf, message: String },
}

/// The decoder-relevant part of `vae/config.json`; missing keys take diffusers' defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    pub out_channels: usize,
    pub latent_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub up_block_types: Vec<String>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub act_fn: String,
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![64],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            layers_per_block: 1,
            norm_num_groups: 32,
            act_fn: "silu".into(),
            scaling_factor: 0.18215,
            shift_factor: None,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl VaeConfig {
    /// SD1.5's VAE (also `stabilityai/sd-vae-ft-mse`).
    pub fn sd15() -> Self {
        Self {
            block_out_channels: vec![128, 256, 512, 512],
            up_block_types: vec!["UpDecoderBlock2D".into(); 4],
            layers_per_block: 2,
            ..Self::default()
        }
    }

    pub fn from_json_str(json: &str, origin: &Path) -> std::result::Result<Self, VaeConfigError> {
        let config: Self = serde_json::from_str(json).map_err(|source| VaeConfigError::Parse {
            path: origin.to_path_buf(),
            source,
        })?;
        let unsupported = |message: String| VaeConfigError::Unsupported {
            path: origin.to_path_buf(),
            message,
        };
        if config.block_out_channels.is_empty() {
            return Err(unsupported("block_out_channels is empty".into()));
        }
        if let Some(other) = config
            .up_block_types
            .iter()
            .find(|t| t.as_str() != "UpDecoderBlock2D")
        {
            return Err(unsupported(format!(
                "up block type {other:?} is not supported (only UpDecoderBlock2D)"
            )));
        }
        if config.act_fn != "silu" {
            return Err(unsupported(format!(
                "act_fn {:?} is not supported (only silu)",
                config.act_fn
            )));
        }
        if config.norm_num_groups == 0
            || config
                .block_out_channels
                .iter()
                .any(|c| c % config.norm_num_groups != 0)
        {
            return Err(unsupported(format!(
                "every block_out_channels entry {:?} must be a multiple of norm_num_groups {}",
                config.block_out_channels, config.norm_num_groups
            )));
        }
        Ok(config)
    }

    pub fn from_file(path: impl AsRef<Path>) -> std::result::Result<Self, VaeConfigError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|source| VaeConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&json, path)
    }
}

/// diffusers' `Attention` as the VAE mid block configures it: GroupNorm, one head spanning all
/// channels (`attention_head_dim = block_out_channels[-1]`), biased projections, residual.
#[derive(Debug)]
struct SpatialSelfAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    channels: usize,
}

impl SpatialSelfAttention {
    fn load(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        // Current diffusers names, else the legacy ones (old sd-vae-ft-mse style files).
        let names = if vb.contains_tensor("to_q.weight") {
            ["to_q", "to_k", "to_v", "to_out.0"]
        } else {
            ["query", "key", "value", "proj_attn"]
        };
        let linear = |name: &str| -> Result<Linear> {
            let vb = vb.pp(name);
            // Some converted files store these as 1x1 convolutions [C, C, 1, 1].
            let weight = match vb.get((channels, channels), "weight") {
                Ok(w) => w,
                Err(_) => vb
                    .get((channels, channels, 1, 1), "weight")?
                    .reshape((channels, channels))?,
            };
            Ok(Linear::new(weight, Some(vb.get(channels, "bias")?)))
        };
        Ok(Self {
            group_norm: GroupNorm::load(vb.pp("group_norm"), groups, channels, VAE_NORM_EPS)?,
            to_q: linear(names[0])?,
            to_k: linear(names[1])?,
            to_v: linear(names[2])?,
            to_out: linear(names[3])?,
            channels,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let tokens = self
            .group_norm
            .forward(xs)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.to_q.forward(&tokens)?;
        let k = self.to_k.forward(&tokens)?;
        let v = self.to_v.forward(&tokens)?;
        let scale = (self.channels as f64).powf(-0.5);
        // One head over every latent position; the softmax runs in f32 like diffusers'.
        let attended = crate::attention::scaled_dot_product(&q, &k, &v, scale, true)?;
        let out = self.to_out.forward(&attended)?;
        let out = out.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?;
        out + xs
    }
}

/// diffusers' `UNetMidBlock2D` as the VAE uses it: resnet, [attention, resnet].
#[derive(Debug)]
struct MidBlock {
    first: ResnetBlock2D,
    attention: Option<SpatialSelfAttention>,
    second: ResnetBlock2D,
}

impl MidBlock {
    fn load(vb: VarBuilder, channels: usize, groups: usize, add_attention: bool) -> Result<Self> {
        let resnet =
            |vb| ResnetBlock2D::load(vb, channels, channels, None, groups, VAE_NORM_EPS, 1.0);
        let attention = if add_attention {
            Some(SpatialSelfAttention::load(
                vb.pp("attentions.0"),
                channels,
                groups,
            )?)
        } else {
            None
        };
        Ok(Self {
            first: resnet(vb.pp("resnets.0"))?,
            attention,
            second: resnet(vb.pp("resnets.1"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.first.forward(xs, None)?;
        let xs = match &self.attention {
            Some(attention) => attention.forward(&xs)?,
            None => xs,
        };
        self.second.forward(&xs, None)
    }
}

/// diffusers' `UpDecoderBlock2D`: resnets (the first changes the width), then an optional
/// nearest-neighbour x2 up-sampling with a 3x3 convolution.
#[derive(Debug)]
struct UpDecoderBlock {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

impl UpDecoderBlock {
    fn load(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        groups: usize,
        upsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| {
                let cin = if i == 0 { in_channels } else { out_channels };
                let vb = vb.pp("resnets").pp(i);
                ResnetBlock2D::load(vb, cin, out_channels, None, groups, VAE_NORM_EPS, 1.0)
            })
            .collect::<Result<Vec<_>>>()?;
        let upsampler = if upsample {
            Some(Upsample2D::load(vb.pp("upsamplers.0"), out_channels)?)
        } else {
            None
        };
        Ok(Self { resnets, upsampler })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = xs.clone();
        for resnet in &self.resnets {
            xs = resnet.forward(&xs, None)?;
        }
        match &self.upsampler {
            Some(upsampler) => {
                let (_, _, h, w) = xs.dims4()?;
                upsampler.forward(&xs, 2 * h, 2 * w)
            }
            None => Ok(xs),
        }
    }
}

/// `post_quant_conv` + `decoder.*` of an `AutoencoderKL`.
#[derive(Debug)]
pub struct VaeDecoder {
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<UpDecoderBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    config: VaeConfig,
}

impl VaeDecoder {
    /// `vb` at the root of the VAE weights file.
    pub fn load(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let channels = &cfg.block_out_channels;
        let (Some(&first_channels), Some(&last_channels)) = (channels.first(), channels.last())
        else {
            candle_core::bail!("VAE config has no block_out_channels")
        };
        let groups = cfg.norm_num_groups;
        let post_quant_conv = if cfg.use_post_quant_conv {
            Some(Conv2d::load(
                vb.pp("post_quant_conv"),
                cfg.latent_channels,
                cfg.latent_channels,
                1,
                1,
                0,
                true,
            )?)
        } else {
            None
        };
        let dec = vb.pp("decoder");
        let conv_in = Conv2d::load(
            dec.pp("conv_in"),
            cfg.latent_channels,
            last_channels,
            3,
            1,
            1,
            true,
        )?;
        let mid_block = MidBlock::load(
            dec.pp("mid_block"),
            last_channels,
            groups,
            cfg.mid_block_add_attention,
        )?;
        // Up blocks run from the widest channels back to the narrowest; all but the last
        // up-sample by 2.
        let reversed: Vec<usize> = channels.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(reversed.len());
        let mut in_channels = last_channels;
        for (i, &out_channels) in reversed.iter().enumerate() {
            up_blocks.push(UpDecoderBlock::load(
                dec.pp("up_blocks").pp(i),
                in_channels,
                out_channels,
                cfg.layers_per_block + 1,
                groups,
                i + 1 < reversed.len(),
            )?);
            in_channels = out_channels;
        }
        let conv_norm_out = GroupNorm::load(
            dec.pp("conv_norm_out"),
            groups,
            first_channels,
            VAE_NORM_EPS,
        )?;
        let conv_out = Conv2d::load(
            dec.pp("conv_out"),
            first_channels,
            cfg.out_channels,
            3,
            1,
            1,
            true,
        )?;
        tracing::debug!(channels = ?cfg.block_out_channels, "loaded VAE decoder");
        Ok(Self {
            post_quant_conv,
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            config: cfg.clone(),
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// `scaling_factor` from the config (0.18215 for SD1.5).
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// `vae.decode(z).sample`: `z` are *unscaled* latents [B, latent_channels, h, w] (the caller
    /// divides the diffusion latents by `scaling_factor` first, as diffusers' pipeline does).
    /// Returns [B, out_channels, 8h, 8w] for four blocks, roughly in [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let (_, c, _, _) = z.dims4()?;
        if c != self.config.latent_channels {
            candle_core::bail!(
                "VAE decode expects latents [B, {}, h, w], got {:?}",
                self.config.latent_channels,
                z.dims()
            );
        }
        let mut xs = match &self.post_quant_conv {
            Some(conv) => conv.forward(z)?,
            None => z.clone(),
        };
        xs = self.conv_in.forward(&xs)?;
        xs = self.mid_block.forward(&xs)?;
        for block in &self.up_blocks {
            xs = block.forward(&xs)?;
        }
        let xs = self.conv_norm_out.forward_silu(&xs)?;
        self.conv_out.forward(&xs)
    }

    /// The pipeline's convenience: `decode(latents / scaling_factor)` mapped to [0, 1]
    /// (`(x / 2 + 0.5).clamp(0, 1)`).
    pub fn decode_to_unit_range(&self, latents: &Tensor) -> Result<Tensor> {
        let shift = self.config.shift_factor.unwrap_or(0.0);
        let z = ((latents / self.config.scaling_factor)? + shift)?;
        ((self.decode(&z)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)
    }
}
