//! Down, mid and up blocks of the UNet.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::attention::{AdapterLookup, CrossContext, Transformer2D, TransformerSpec};
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};

/// What every block of one UNet shares.
pub(crate) struct BlockContext<'a> {
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub cross_dim: usize,
    pub linear_projection: bool,
    pub upcast: bool,
    pub resnet_scale: f64,
    pub adapter: Option<&'a AdapterLookup<'a>>,
}

impl BlockContext<'_> {
    fn resnet(&self, vb: VarBuilder, cin: usize, cout: usize, scale: f64) -> Result<ResnetBlock2D> {
        ResnetBlock2D::load(
            vb,
            cin,
            cout,
            Some(self.temb_channels),
            self.groups,
            self.eps,
            scale,
        )
    }

    fn transformer(
        &self,
        vb: VarBuilder,
        channels: usize,
        heads: usize,
        layers: usize,
    ) -> Result<Transformer2D> {
        let spec = TransformerSpec {
            channels,
            heads,
            layers,
            cross_dim: self.cross_dim,
            groups: self.groups,
            linear_projection: self.linear_projection,
            upcast: self.upcast,
        };
        Transformer2D::load(vb, &spec, self.adapter)
    }
}

/// One level of the UNet: resnets (each optionally followed by a transformer).
#[derive(Debug, Clone)]
struct Layer {
    resnet: ResnetBlock2D,
    attention: Option<Transformer2D>,
}

impl Layer {
    /// Layer `i` of a down or up block: `resnets.{i}` (from `cin` channels), then
    /// `attentions.{i}` when the block has cross-attention.
    fn load(
        vb: &VarBuilder,
        i: usize,
        cin: usize,
        spec: &BlockSpec,
        ctx: &BlockContext,
    ) -> Result<Self> {
        let resnet = ctx.resnet(
            vb.pp(format!("resnets.{i}")),
            cin,
            spec.out_channels,
            ctx.resnet_scale,
        )?;
        let attention = if spec.cross_attention {
            Some(ctx.transformer(
                vb.pp(format!("attentions.{i}")),
                spec.out_channels,
                spec.heads,
                spec.transformer_layers,
            )?)
        } else {
            None
        };
        Ok(Layer { resnet, attention })
    }

    fn forward(&self, x: &Tensor, temb_act: &Tensor, context: &CrossContext) -> Result<Tensor> {
        let x = self.resnet.forward(x, Some(temb_act))?;
        match &self.attention {
            Some(attn) => attn.forward(&x, context),
            None => Ok(x),
        }
    }
}

/// Shape of one down or up block.
pub(crate) struct BlockSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    /// For up blocks: the width of the previous (deeper) up block's output.
    pub prev_channels: usize,
    pub layers: usize,
    pub heads: usize,
    pub transformer_layers: usize,
    pub cross_attention: bool,
    pub resample: bool,
}

/// `DownBlock2D` / `CrossAttnDownBlock2D`.
#[derive(Debug, Clone)]
pub struct DownBlock {
    layers: Vec<Layer>,
    downsample: Option<Downsample2D>,
}

impl DownBlock {
    pub(crate) fn load(
        vb: VarBuilder,
        spec: &BlockSpec,
        ctx: &BlockContext,
        padding: usize,
    ) -> Result<Self> {
        let layers = (0..spec.layers)
            .map(|i| {
                let cin = if i == 0 {
                    spec.in_channels
                } else {
                    spec.out_channels
                };
                Layer::load(&vb, i, cin, spec, ctx)
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if spec.resample {
            Some(Downsample2D::load(
                vb.pp("downsamplers.0"),
                spec.out_channels,
                padding,
            )?)
        } else {
            None
        };
        Ok(Self { layers, downsample })
    }

    /// Pushes every intermediate output onto `skips` (the UNet's skip connections).
    pub fn forward(
        &self,
        x: &Tensor,
        temb_act: &Tensor,
        context: &CrossContext,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, temb_act, context)?;
            skips.push(x.clone());
        }
        if let Some(down) = &self.downsample {
            x = down.forward(&x)?;
            skips.push(x.clone());
        }
        Ok(x)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, transformer(s), resnet.
#[derive(Debug, Clone)]
pub struct MidBlock {
    first: ResnetBlock2D,
    attention: Transformer2D,
    second: ResnetBlock2D,
}

impl MidBlock {
    pub(crate) fn load(
        vb: VarBuilder,
        channels: usize,
        heads: usize,
        transformer_layers: usize,
        scale: f64,
        ctx: &BlockContext,
    ) -> Result<Self> {
        Ok(Self {
            first: ctx.resnet(vb.pp("resnets.0"), channels, channels, scale)?,
            attention: ctx.transformer(
                vb.pp("attentions.0"),
                channels,
                heads,
                transformer_layers,
            )?,
            second: ctx.resnet(vb.pp("resnets.1"), channels, channels, scale)?,
        })
    }

    pub fn forward(&self, x: &Tensor, temb_act: &Tensor, context: &CrossContext) -> Result<Tensor> {
        let x = self.first.forward(x, Some(temb_act))?;
        let x = self.attention.forward(&x, context)?;
        self.second.forward(&x, Some(temb_act))
    }
}

/// `UpBlock2D` / `CrossAttnUpBlock2D`: each resnet takes the concatenation with a skip.
#[derive(Debug, Clone)]
pub struct UpBlock {
    layers: Vec<Layer>,
    upsample: Option<Upsample2D>,
}

impl UpBlock {
    pub(crate) fn load(vb: VarBuilder, spec: &BlockSpec, ctx: &BlockContext) -> Result<Self> {
        let layers = (0..spec.layers)
            .map(|i| {
                // The last resnet receives the skip from the shallower level's input.
                let skip = if i + 1 == spec.layers {
                    spec.in_channels
                } else {
                    spec.out_channels
                };
                let cin = if i == 0 {
                    spec.prev_channels
                } else {
                    spec.out_channels
                };
                Layer::load(&vb, i, cin + skip, spec, ctx)
            })
            .collect::<Result<Vec<_>>>()?;
        let upsample = if spec.resample {
            Some(Upsample2D::load(vb.pp("upsamplers.0"), spec.out_channels)?)
        } else {
            None
        };
        Ok(Self { layers, upsample })
    }

    /// Pops one skip per resnet; upsamples to the spatial size of the next remaining skip.
    pub fn forward(
        &self,
        x: &Tensor,
        temb_act: &Tensor,
        context: &CrossContext,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            let skip = skips
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("UNet skip connections exhausted".into()))?;
            x = layer.forward(&Tensor::cat(&[&x, &skip], 1)?, temb_act, context)?;
        }
        if let Some(up) = &self.upsample {
            let (h, w) = match skips.last() {
                Some(next) => {
                    let (_, _, h, w) = next.dims4()?;
                    (h, w)
                }
                None => {
                    let (_, _, h, w) = x.dims4()?;
                    (h * 2, w * 2)
                }
            };
            x = up.forward(&x, h, w)?;
        }
        Ok(x)
    }
}
