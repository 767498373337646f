//! `UNetConfig`: the subset of diffusers' `UNet2DConditionModel` config (`unet/config.json`)
//! that SD1.x/2.x-style UNets use, parsed with the same defaults diffusers applies.

use serde::Deserialize;
use std::path::Path;

use super::UNetError;

/// A config value that diffusers accepts either as one number for every block or one per block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    Same(T),
    Each(Vec<T>),
}

impl<T: Copy> PerBlock<T> {
    /// The value for every block, in down-block order; `field` names the key for error messages.
    fn expand(&self, blocks: usize, field: &str) -> Result<Vec<T>, UNetError> {
        match self {
            PerBlock::Same(v) => Ok(vec![*v; blocks]),
            PerBlock::Each(vs) if vs.len() == blocks => Ok(vs.clone()),
            PerBlock::Each(vs) => Err(UNetError::Config(format!(
                "`{field}` has {} entries but there are {blocks} down blocks",
                vs.len()
            ))),
        }
    }
}

/// The kind of a down or up block, as named in `down_block_types` / `up_block_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Resnets only.
    Plain,
    /// Resnets each followed by a `Transformer2DModel` (self- and cross-attention).
    CrossAttention,
}

fn default_in_channels() -> usize {
    4
}
fn default_block_out_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_layers_per_block() -> PerBlock<usize> {
    PerBlock::Same(2)
}
fn default_attention_head_dim() -> PerBlock<usize> {
    PerBlock::Same(8)
}
fn default_transformer_layers() -> PerBlock<usize> {
    PerBlock::Same(1)
}
fn default_cross_attention_dim() -> usize {
    1280
}
fn default_norm_num_groups() -> Option<usize> {
    Some(32)
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_one() -> f64 {
    1.0
}
fn default_conv_kernel() -> usize {
    3
}
fn default_down_block_types() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_up_block_types() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn default_mid_block_type() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".to_string())
}
fn default_act_fn() -> String {
    "silu".to_string()
}
fn default_positional() -> String {
    "positional".to_string()
}
fn default_default() -> String {
    "default".to_string()
}

/// diffusers `UNet2DConditionModel` config. Defaults are diffusers' constructor defaults, so a
/// config.json that omits a key means what it means to diffusers.
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default = "default_in_channels")]
    pub out_channels: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "default_down_block_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid_block_type")]
    pub mid_block_type: Option<String>,
    #[serde(default = "default_up_block_types")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_block_out_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_layers_per_block")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "default_one")]
    pub downsample_padding: f64,
    #[serde(default = "default_one")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "default_act_fn")]
    pub act_fn: String,
    #[serde(default = "default_norm_num_groups")]
    pub norm_num_groups: Option<usize>,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_cross_attention_dim")]
    pub cross_attention_dim: usize,
    #[serde(default = "default_transformer_layers")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Legacy meaning (SD1.x/2.x configs): the number of attention heads, not their width.
    #[serde(default = "default_attention_head_dim")]
    pub attention_head_dim: PerBlock<usize>,
    /// When present it is the number of heads and `attention_head_dim` is ignored.
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default = "default_conv_kernel")]
    pub conv_in_kernel: usize,
    #[serde(default = "default_conv_kernel")]
    pub conv_out_kernel: usize,
    #[serde(default = "default_one")]
    pub resnet_out_scale_factor: f64,
    #[serde(default)]
    pub sample_size: Option<usize>,

    // Features of other UNet families. Parsed only to reject configs this model cannot run.
    #[serde(default)]
    pub only_cross_attention: Option<PerBlock<bool>>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
    #[serde(default = "default_positional")]
    pub time_embedding_type: String,
    #[serde(default = "default_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "default_default")]
    pub attention_type: String,
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
}

/// Per-down-block values resolved from the config (up blocks use them reversed).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockPlan {
    pub kind: BlockKind,
    pub out_channels: usize,
    pub layers: usize,
    pub heads: usize,
    pub transformer_layers: usize,
}

impl UNetConfig {
    /// Parses `unet/config.json` text and checks that this implementation can run it.
    pub fn from_json_str(json: &str) -> Result<Self, UNetError> {
        let cfg: UNetConfig = serde_json::from_str(json)
            .map_err(|e| UNetError::Config(format!("unet config.json is not valid: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a diffusers `unet/config.json` file.
    pub fn from_file(path: &Path) -> Result<Self, UNetError> {
        let json = std::fs::read_to_string(path).map_err(|e| {
            UNetError::Config(format!("cannot read UNet config {}: {e}", path.display()))
        })?;
        Self::from_json_str(&json)
            .map_err(|e| UNetError::Config(format!("{}: {e}", path.display())))
    }

    /// The configuration of Stable Diffusion 1.5's UNet (its public `unet/config.json`).
    pub fn sd15() -> Self {
        let cfg = Self::from_json_str(
            r#"{"block_out_channels":[320,640,1280,1280],"attention_head_dim":8,
                "cross_attention_dim":768,"layers_per_block":2,"norm_num_groups":32,
                "sample_size":64}"#,
        );
        cfg.expect("the built-in SD1.5 UNet config is valid")
    }

    fn unsupported(what: String) -> UNetError {
        UNetError::Config(format!(
            "unsupported UNet config: {what} (only SD1.x/SD2.x-style UNet2DConditionModel configs run here)"
        ))
    }

    fn validate(&self) -> Result<(), UNetError> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(UNetError::Config("`block_out_channels` is empty".into()));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(UNetError::Config(format!(
                "`down_block_types` ({}) and `up_block_types` ({}) must both have one entry per `block_out_channels` ({n})",
                self.down_block_types.len(),
                self.up_block_types.len()
            )));
        }
        for t in &self.down_block_types {
            block_kind(t, "CrossAttnDownBlock2D", "DownBlock2D")?;
        }
        for t in &self.up_block_types {
            block_kind(t, "CrossAttnUpBlock2D", "UpBlock2D")?;
        }
        if self.mid_block_type.as_deref() != Some("UNetMidBlock2DCrossAttn") {
            return Err(Self::unsupported(format!(
                "mid_block_type = {:?}",
                self.mid_block_type
            )));
        }
        let groups = self
            .norm_num_groups
            .ok_or_else(|| Self::unsupported("norm_num_groups = null".into()))?;
        for &c in &self.block_out_channels {
            if groups == 0 || c % groups != 0 {
                return Err(UNetError::Config(format!(
                    "block channel count {c} is not divisible by norm_num_groups {groups}"
                )));
            }
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(Self::unsupported(format!("act_fn = {:?}", self.act_fn)));
        }
        let only_cross = match &self.only_cross_attention {
            None => false,
            Some(PerBlock::Same(v)) => *v,
            Some(PerBlock::Each(vs)) => vs.iter().any(|v| *v),
        };
        let rejected = [
            (only_cross, "only_cross_attention = true".to_string()),
            (
                self.dual_cross_attention,
                "dual_cross_attention = true".to_string(),
            ),
            (
                self.class_embed_type.is_some(),
                format!("class_embed_type = {:?}", self.class_embed_type),
            ),
            (
                self.num_class_embeds.is_some(),
                format!("num_class_embeds = {:?}", self.num_class_embeds),
            ),
            (
                self.addition_embed_type.is_some(),
                format!("addition_embed_type = {:?}", self.addition_embed_type),
            ),
            (
                self.encoder_hid_dim.is_some(),
                format!("encoder_hid_dim = {:?}", self.encoder_hid_dim),
            ),
            (
                self.time_cond_proj_dim.is_some(),
                format!("time_cond_proj_dim = {:?}", self.time_cond_proj_dim),
            ),
            (
                self.timestep_post_act.is_some(),
                format!("timestep_post_act = {:?}", self.timestep_post_act),
            ),
            (
                self.cross_attention_norm.is_some(),
                format!("cross_attention_norm = {:?}", self.cross_attention_norm),
            ),
            (
                self.time_embedding_type != "positional",
                format!("time_embedding_type = {:?}", self.time_embedding_type),
            ),
            (
                self.resnet_time_scale_shift != "default",
                format!(
                    "resnet_time_scale_shift = {:?}",
                    self.resnet_time_scale_shift
                ),
            ),
            (
                self.attention_type != "default",
                format!("attention_type = {:?}", self.attention_type),
            ),
            (
                self.resnet_skip_time_act,
                "resnet_skip_time_act = true".to_string(),
            ),
            (
                self.reverse_transformer_layers_per_block
                    .as_ref()
                    .is_some_and(|v| !v.is_null()),
                "reverse_transformer_layers_per_block".to_string(),
            ),
            (
                self.conv_in_kernel.is_multiple_of(2),
                format!("conv_in_kernel = {}", self.conv_in_kernel),
            ),
            (
                self.conv_out_kernel.is_multiple_of(2),
                format!("conv_out_kernel = {}", self.conv_out_kernel),
            ),
            (
                self.downsample_padding != 0.0 && self.downsample_padding != 1.0,
                format!("downsample_padding = {}", self.downsample_padding),
            ),
        ];
        if let Some((_, what)) = rejected.into_iter().find(|(bad, _)| *bad) {
            return Err(Self::unsupported(what));
        }
        let plan = self.block_plan()?;
        for b in &plan {
            if b.heads == 0 || b.out_channels % b.heads != 0 {
                return Err(UNetError::Config(format!(
                    "block channel count {} is not divisible by its {} attention heads",
                    b.out_channels, b.heads
                )));
            }
        }
        Ok(())
    }

    /// Number of resolution levels (down blocks).
    pub fn num_blocks(&self) -> usize {
        self.block_out_channels.len()
    }

    /// Group count of every GroupNorm (validated to be present).
    pub fn groups(&self) -> usize {
        self.norm_num_groups.unwrap_or(32)
    }

    /// Width of the timestep embedding (`time_embedding_dim`, default 4x the first block width).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4)
    }

    /// Per-down-block plan: kind, width, resnet count, attention heads, transformer depth.
    pub fn block_plan(&self) -> Result<Vec<BlockPlan>, UNetError> {
        let n = self.num_blocks();
        let layers = self.layers_per_block.expand(n, "layers_per_block")?;
        let transformer = self
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;
        // diffusers: `num_attention_heads = num_attention_heads or attention_head_dim`.
        let heads = match &self.num_attention_heads {
            Some(h) => h.expand(n, "num_attention_heads")?,
            None => self.attention_head_dim.expand(n, "attention_head_dim")?,
        };
        (0..n)
            .map(|i| {
                Ok(BlockPlan {
                    kind: block_kind(
                        &self.down_block_types[i],
                        "CrossAttnDownBlock2D",
                        "DownBlock2D",
                    )?,
                    out_channels: self.block_out_channels[i],
                    layers: layers[i],
                    heads: heads[i],
                    transformer_layers: transformer[i],
                })
            })
            .collect()
    }

    /// Kind of up block `i` (in up-block order).
    pub fn up_block_kind(&self, i: usize) -> Result<BlockKind, UNetError> {
        block_kind(&self.up_block_types[i], "CrossAttnUpBlock2D", "UpBlock2D")
    }
}

fn block_kind(name: &str, cross: &str, plain: &str) -> Result<BlockKind, UNetError> {
    if name == cross {
        Ok(BlockKind::CrossAttention)
    } else if name == plain {
        Ok(BlockKind::Plain)
    } else {
        Err(UNetConfig::unsupported(format!(
            "block type {name:?} (expected {cross} or {plain})"
        )))
    }
}
