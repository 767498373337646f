//! SD1.x-style `UNet2DConditionModel` with optional IP-Adapter decoupled cross-attention.
//!
//! Weight names follow diffusers' `unet/diffusion_pytorch_model.safetensors`. With an adapter,
//! the last `num_tokens` tokens of the context are the id tokens:
//! `Z = attn(Q, K_text, V_text) + scale * attn(Q, K_ip, V_ip)`; the adapter's LoRA is fused into
//! `to_q`/`to_k`/`to_v`/`to_out.0` once at load.

mod attention;
mod blocks;
mod config;
mod embeddings;
pub(crate) mod resnet;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::conv::Conv2d;
use crate::group_norm::GroupNorm;

pub use attention::CrossContext;
pub use config::{BlockKind, BlockPlan, PerBlock, UNetConfig};

use crate::ip_adapter::{IpAdapterError, IpAdapterWeights};
use attention::AdapterLookup;
use blocks::{BlockContext, BlockSpec, DownBlock, MidBlock, UpBlock};
use embeddings::TimestepEmbedding;

#[derive(Debug, thiserror::Error)]
pub enum UNetError {
    #[error("{0}")]
    Config(String),
    #[error("building the UNet failed (do the weights match unet/config.json?): {0}")]
    Weights(candle_core::Error),
    /// Boxed: the adapter's errors carry paths and shapes.
    #[error(transparent)]
    IpAdapter(Box<IpAdapterError>),
    #[error("invalid UNet input: {0}")]
    Input(String),
    #[error("UNet forward failed: {0}")]
    Forward(#[from] candle_core::Error),
}

impl From<IpAdapterError> for UNetError {
    fn from(e: IpAdapterError) -> Self {
        UNetError::IpAdapter(Box::new(e))
    }
}

/// How an IP-Adapter is attached to the UNet.
#[derive(Debug, Clone, Copy)]
pub struct IpAdapterAttachment<'a> {
    pub weights: &'a IpAdapterWeights,
    /// Id tokens at the end of the context (4 for FaceID-Plus).
    pub num_tokens: usize,
    /// Adapter weight on the id-token attention (diffusers' `set_ip_adapter_scale`, default 1.0).
    pub scale: f64,
}

#[derive(Debug, Clone, Copy)]
struct IpSettings {
    num_tokens: usize,
    scale: f64,
}

/// Stable Diffusion UNet. `forward` predicts the noise (epsilon) for one timestep.
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    config: UNetConfig,
    time_embedding: TimestepEmbedding,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    ip: Option<IpSettings>,
    dtype: DType,
    device: Device,
}

impl UNet2DConditionModel {
    /// Builds the UNet from `vb` (root of the diffusers UNet weights, in the dtype/device the
    /// model should run in). With `ip`, the adapter's layers are checked against `cfg`, its LoRA
    /// fused and its id projections attached.
    pub fn load(
        vb: VarBuilder,
        cfg: &UNetConfig,
        ip: Option<IpAdapterAttachment<'_>>,
    ) -> Result<Self, UNetError> {
        let adapter_layers = match &ip {
            Some(att) => {
                if att.num_tokens == 0 {
                    return Err(UNetError::Config(
                        "an IP-Adapter needs at least one id token".into(),
                    ));
                }
                Some(att.weights.unet_layers(cfg)?)
            }
            None => None,
        };
        let lookup = adapter_layers.as_ref().map(|layers| AdapterLookup {
            root_prefix: vb.prefix(),
            layers,
            used: std::cell::Cell::new(0),
        });
        let model = Self::build(
            vb,
            cfg,
            lookup.as_ref(),
            ip.map(|a| IpSettings {
                num_tokens: a.num_tokens,
                scale: a.scale,
            }),
        )
        .map_err(UNetError::Weights)?;
        if let (Some(lookup), Some(layers)) = (&lookup, &adapter_layers) {
            // Every validated adapter layer must have found its attention module.
            if lookup.used.get() != layers.len() {
                return Err(UNetError::Config(format!(
                    "internal: {} of {} IP-Adapter layers were attached",
                    lookup.used.get(),
                    layers.len()
                )));
            }
            tracing::info!(layers = layers.len(), "IP-Adapter fused into the UNet");
        }
        Ok(model)
    }

    fn build(
        vb: VarBuilder,
        cfg: &UNetConfig,
        adapter: Option<&AdapterLookup>,
        ip: Option<IpSettings>,
    ) -> candle_core::Result<Self> {
        let plan = cfg
            .block_plan()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let n = plan.len();
        let channels = &cfg.block_out_channels;
        let temb_channels = cfg.time_embed_dim();
        let groups = cfg.groups();
        let ctx = BlockContext {
            temb_channels,
            groups,
            eps: cfg.norm_eps,
            cross_dim: cfg.cross_attention_dim,
            linear_projection: cfg.use_linear_projection,
            upcast: cfg.upcast_attention,
            resnet_scale: cfg.resnet_out_scale_factor,
            adapter,
        };
        let time_embedding = TimestepEmbedding::load(
            vb.clone(),
            channels[0],
            temb_channels,
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
        )?;
        let k_in = cfg.conv_in_kernel;
        let conv_in = resnet::conv(
            vb.pp("conv_in"),
            cfg.in_channels,
            channels[0],
            k_in,
            1,
            k_in / 2,
        )?;

        let mut down_blocks = Vec::with_capacity(n);
        for (i, block) in plan.iter().enumerate() {
            let spec = BlockSpec {
                in_channels: if i == 0 { channels[0] } else { channels[i - 1] },
                out_channels: block.out_channels,
                prev_channels: 0,
                layers: block.layers,
                heads: block.heads,
                transformer_layers: block.transformer_layers,
                cross_attention: block.kind == BlockKind::CrossAttention,
                resample: i + 1 < n,
            };
            let padding = cfg.downsample_padding as usize;
            down_blocks.push(DownBlock::load(
                vb.pp(format!("down_blocks.{i}")),
                &spec,
                &ctx,
                padding,
            )?);
        }

        let last = &plan[n - 1];
        let mid_block = MidBlock::load(
            vb.pp("mid_block"),
            last.out_channels,
            last.heads,
            last.transformer_layers,
            cfg.mid_block_scale_factor,
            &ctx,
        )?;

        let mut up_blocks = Vec::with_capacity(n);
        let mut prev_channels = last.out_channels;
        for i in 0..n {
            let block = &plan[n - 1 - i];
            let kind = cfg
                .up_block_kind(i)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let spec = BlockSpec {
                in_channels: channels[(n - 1).saturating_sub(i + 1)],
                out_channels: block.out_channels,
                prev_channels,
                layers: block.layers + 1,
                heads: block.heads,
                transformer_layers: block.transformer_layers,
                cross_attention: kind == BlockKind::CrossAttention,
                resample: i + 1 < n,
            };
            up_blocks.push(UpBlock::load(vb.pp(format!("up_blocks.{i}")), &spec, &ctx)?);
            prev_channels = block.out_channels;
        }

        let k_out = cfg.conv_out_kernel;
        Ok(Self {
            config: cfg.clone(),
            time_embedding,
            conv_in,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(
                vb.pp("conv_norm_out"),
                groups,
                channels[0],
                cfg.norm_eps,
            )?,
            conv_out: resnet::conv(
                vb.pp("conv_out"),
                channels[0],
                cfg.out_channels,
                k_out,
                1,
                k_out / 2,
            )?,
            ip,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of id tokens expected at the end of the context, if an adapter is attached.
    pub fn num_ip_tokens(&self) -> Option<usize> {
        self.ip.map(|ip| ip.num_tokens)
    }

    /// Current adapter weight on the id-token attention, if an adapter is attached.
    pub fn ip_adapter_scale(&self) -> Option<f64> {
        self.ip.map(|ip| ip.scale)
    }

    /// Changes the adapter weight (no effect without an adapter).
    pub fn set_ip_adapter_scale(&mut self, scale: f64) {
        if let Some(ip) = &mut self.ip {
            ip.scale = scale;
        }
    }

    /// Splits the context into text and id tokens (once per call, shared by every layer).
    fn cross_context(&self, context: &Tensor) -> Result<CrossContext, UNetError> {
        let (_, tokens, dim) = context.dims3().map_err(|_| {
            UNetError::Input(format!(
                "encoder_hidden_states must be [B, tokens, {}], got {:?}",
                self.config.cross_attention_dim,
                context.dims()
            ))
        })?;
        if dim != self.config.cross_attention_dim {
            return Err(UNetError::Input(format!(
                "encoder_hidden_states width is {dim}, the UNet's cross_attention_dim is {}",
                self.config.cross_attention_dim
            )));
        }
        let context = context.to_dtype(self.dtype)?;
        match self.ip {
            None => Ok(CrossContext {
                text: context,
                ip: None,
            }),
            Some(IpSettings { num_tokens, scale }) => {
                if tokens <= num_tokens {
                    return Err(UNetError::Input(format!(
                        "encoder_hidden_states has {tokens} tokens; with the IP-Adapter it must be text tokens followed by {num_tokens} id tokens"
                    )));
                }
                let text_len = tokens - num_tokens;
                Ok(CrossContext {
                    text: context.narrow(1, 0, text_len)?.contiguous()?,
                    ip: Some((
                        context.narrow(1, text_len, num_tokens)?.contiguous()?,
                        scale,
                    )),
                })
            }
        }
    }

    /// Predicts the noise for `sample` `[B, in_channels, h, w]` at `timestep`, conditioned on
    /// `encoder_hidden_states` `[B, tokens, cross_attention_dim]` (text tokens, then the id tokens
    /// when an adapter is attached). Returns `[B, out_channels, h, w]` in the model dtype.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor, UNetError> {
        let (batch, channels, _, _) = sample.dims4().map_err(|_| {
            UNetError::Input(format!(
                "sample must be [B, {}, h, w], got {:?}",
                self.config.in_channels,
                sample.dims()
            ))
        })?;
        if channels != self.config.in_channels {
            return Err(UNetError::Input(format!(
                "sample has {channels} channels, the UNet expects {}",
                self.config.in_channels
            )));
        }
        let context_batch = encoder_hidden_states.dim(0).unwrap_or(0);
        if context_batch != batch {
            return Err(UNetError::Input(format!(
                "sample batch is {batch} but encoder_hidden_states batch is {context_batch}"
            )));
        }
        let context = self.cross_context(encoder_hidden_states)?;
        let mut x = sample.to_dtype(self.dtype)?;
        if self.config.center_input_sample {
            x = ((x * 2.0)? - 1.0)?;
        }
        // Every resnet applies SiLU to the same embedding; do it once.
        let temb_act = self.time_embedding.forward(timestep, self.dtype)?.silu()?;

        x = self.conv_in.forward(&x)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            x = block.forward(&x, &temb_act, &context, &mut skips)?;
        }
        x = self.mid_block.forward(&x, &temb_act, &context)?;
        for block in &self.up_blocks {
            x = block.forward(&x, &temb_act, &context, &mut skips)?;
        }
        let x = self.conv_norm_out.forward_silu(&x)?;
        Ok(self.conv_out.forward(&x)?)
    }
}
