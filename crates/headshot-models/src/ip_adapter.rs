//! The IP-Adapter file: `image_proj` (face projection weights) and `ip_adapter` (per attention
//! layer LoRA + `to_k_ip`/`to_v_ip`), read from h94's torch `.bin` or a `.safetensors` file.
//!
//! Layer `N` of the file is the N-th attention layer in diffusers' `unet.attn_processors` order:
//! all down blocks, then all up blocks, then the mid block; within each transformer block the
//! self-attention (`attn1`) comes before the cross-attention (`attn2`), so cross layers are odd.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::unet::{BlockKind, UNetConfig, UNetError};

#[derive(Debug, thiserror::Error)]
pub enum IpAdapterError {
    #[error("cannot read IP-Adapter file {path}: {source}")]
    Read {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("IP-Adapter file {path} has no `{section}` tensors (expected a torch .bin with nested `image_proj`/`ip_adapter` dicts or a .safetensors with `image_proj.`/`ip_adapter.` key prefixes)")]
    MissingSection {
        path: PathBuf,
        section: &'static str,
    },
    #[error("IP-Adapter file {path} lacks `ip_adapter.{key}` (expected shape {expected:?}) for UNet attention layer {path_in_unet}")]
    MissingKey {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        path_in_unet: String,
    },
    #[error("IP-Adapter tensor `ip_adapter.{key}` in {path} has shape {actual:?}, but UNet attention layer {path_in_unet} needs {expected:?}; is the adapter made for this base model?")]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
        path_in_unet: String,
    },
    #[error("IP-Adapter file {path} has layer {index} but this UNet has only {count} attention layers (0..{count}); is the adapter made for this base model?")]
    ExtraLayer {
        path: PathBuf,
        index: usize,
        count: usize,
    },
    #[error("IP-Adapter file {path} has an unexpected key `ip_adapter.{key}` (expected `{{N}}.to_{{q,k,v,out}}_lora.{{down,up}}.weight` or `{{N}}.to_{{k,v}}_ip.weight`)")]
    UnexpectedKey { path: PathBuf, key: String },
    #[error("invalid UNet config for the IP-Adapter: {0}")]
    Config(String),
}

/// The two halves of an IP-Adapter file, with tensors as stored (CPU, file dtype).
#[derive(Debug, Clone)]
pub struct IpAdapterWeights {
    source: PathBuf,
    image_proj: HashMap<String, Tensor>,
    ip_adapter: HashMap<String, Tensor>,
}

impl IpAdapterWeights {
    /// Reads `.safetensors` (keys `image_proj.*`, `ip_adapter.*`) or a torch zip-pickle `.bin`
    /// (`{"image_proj": {...}, "ip_adapter": {...}}`), chosen by the file extension.
    pub fn load(path: &Path) -> Result<Self, IpAdapterError> {
        let read_err = |source| IpAdapterError::Read {
            path: path.to_path_buf(),
            source,
        };
        let is_safetensors = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
        let (image_proj, ip_adapter) = if is_safetensors {
            let all = candle_core::safetensors::load(path, &Device::Cpu).map_err(read_err)?;
            let mut image_proj = HashMap::new();
            let mut ip_adapter = HashMap::new();
            for (name, tensor) in all {
                if let Some(k) = name.strip_prefix("image_proj.") {
                    image_proj.insert(k.to_string(), tensor);
                } else if let Some(k) = name.strip_prefix("ip_adapter.") {
                    ip_adapter.insert(k.to_string(), tensor);
                }
            }
            (image_proj, ip_adapter)
        } else {
            let section = |key| -> Result<HashMap<String, Tensor>, IpAdapterError> {
                Ok(candle_core::pickle::read_all_with_key(path, Some(key))
                    .map_err(read_err)?
                    .into_iter()
                    .collect())
            };
            (section("image_proj")?, section("ip_adapter")?)
        };
        let weights = Self::from_maps(path.to_path_buf(), image_proj, ip_adapter)?;
        tracing::info!(
            path = %path.display(),
            image_proj = weights.image_proj.len(),
            ip_adapter = weights.ip_adapter.len(),
            "loaded IP-Adapter weights"
        );
        Ok(weights)
    }

    /// Builds from already-read maps (keys without the section prefix). `source` names the
    /// origin in error messages.
    pub fn from_maps(
        source: PathBuf,
        image_proj: HashMap<String, Tensor>,
        ip_adapter: HashMap<String, Tensor>,
    ) -> Result<Self, IpAdapterError> {
        if image_proj.is_empty() {
            return Err(IpAdapterError::MissingSection {
                path: source,
                section: "image_proj",
            });
        }
        if ip_adapter.is_empty() {
            return Err(IpAdapterError::MissingSection {
                path: source,
                section: "ip_adapter",
            });
        }
        Ok(Self {
            source,
            image_proj,
            ip_adapter,
        })
    }

    /// The file this was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// `image_proj` tensors (keys like `proj.0.weight`, `perceiver_resampler.layers.0.0.to_q.weight`).
    pub fn image_proj(&self) -> &HashMap<String, Tensor> {
        &self.image_proj
    }

    /// `ip_adapter` tensors (keys like `1.to_k_ip.weight`, `0.to_q_lora.down.weight`).
    pub fn ip_adapter(&self) -> &HashMap<String, Tensor> {
        &self.ip_adapter
    }

    /// A VarBuilder over `image_proj`, converting to `dtype` on `device` as tensors are fetched.
    pub fn image_proj_var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_tensors(self.image_proj.clone(), dtype, device)
    }

    /// Checks every layer against `cfg` and returns the per-attention-layer weights keyed by
    /// the attention's path in the UNet (e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn2`).
    pub fn unet_layers(
        &self,
        cfg: &UNetConfig,
    ) -> Result<HashMap<String, AttentionAdapterLayer>, IpAdapterError> {
        let sites =
            attention_layer_sites(cfg).map_err(|e| IpAdapterError::Config(e.to_string()))?;
        self.check_no_extra_keys(sites.len())?;
        let mut layers = HashMap::with_capacity(sites.len());
        for site in &sites {
            if let Some(layer) = self.layer(site)? {
                layers.insert(site.path.clone(), layer);
            }
        }
        Ok(layers)
    }

    fn check_no_extra_keys(&self, count: usize) -> Result<(), IpAdapterError> {
        const SUFFIXES: [&str; 10] = [
            "to_q_lora.down.weight",
            "to_q_lora.up.weight",
            "to_k_lora.down.weight",
            "to_k_lora.up.weight",
            "to_v_lora.down.weight",
            "to_v_lora.up.weight",
            "to_out_lora.down.weight",
            "to_out_lora.up.weight",
            "to_k_ip.weight",
            "to_v_ip.weight",
        ];
        for key in self.ip_adapter.keys() {
            let parsed = key
                .split_once('.')
                .filter(|(_, rest)| SUFFIXES.contains(rest))
                .and_then(|(n, _)| n.parse::<usize>().ok());
            match parsed {
                None => {
                    return Err(IpAdapterError::UnexpectedKey {
                        path: self.source.clone(),
                        key: key.clone(),
                    })
                }
                Some(index) if index >= count => {
                    return Err(IpAdapterError::ExtraLayer {
                        path: self.source.clone(),
                        index,
                        count,
                    })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn tensor(
        &self,
        site: &AttentionLayerSite,
        name: &str,
        expected: [usize; 2],
    ) -> Result<Tensor, IpAdapterError> {
        let key = format!("{}.{name}", site.index);
        let tensor = self
            .ip_adapter
            .get(&key)
            .ok_or_else(|| IpAdapterError::MissingKey {
                path: self.source.clone(),
                key: key.clone(),
                expected: expected.to_vec(),
                path_in_unet: site.path.clone(),
            })?;
        if tensor.dims() != expected {
            return Err(IpAdapterError::Shape {
                path: self.source.clone(),
                key,
                expected: expected.to_vec(),
                actual: tensor.dims().to_vec(),
                path_in_unet: site.path.clone(),
            });
        }
        Ok(tensor.clone())
    }

    /// LoRA pair `{N}.{name}_lora.{down,up}.weight`; the rank comes from the file.
    fn lora(
        &self,
        site: &AttentionLayerSite,
        name: &str,
        in_dim: usize,
        out_dim: usize,
        rank: usize,
    ) -> Result<LoraPair, IpAdapterError> {
        Ok(LoraPair {
            down: self.tensor(site, &format!("{name}_lora.down.weight"), [rank, in_dim])?,
            up: self.tensor(site, &format!("{name}_lora.up.weight"), [out_dim, rank])?,
        })
    }

    fn layer(
        &self,
        site: &AttentionLayerSite,
    ) -> Result<Option<AttentionAdapterLayer>, IpAdapterError> {
        let has = |name: &str| {
            self.ip_adapter
                .contains_key(&format!("{}.{name}", site.index))
        };
        let any_lora = ["to_q", "to_k", "to_v", "to_out"]
            .iter()
            .any(|n| has(&format!("{n}_lora.down.weight")) || has(&format!("{n}_lora.up.weight")));
        let lora = if any_lora {
            let rank = ["to_q", "to_k", "to_v", "to_out"]
                .iter()
                .find_map(|n| {
                    self.ip_adapter
                        .get(&format!("{}.{n}_lora.down.weight", site.index))
                })
                .map(|t| t.dims().first().copied().unwrap_or(0))
                .unwrap_or(0);
            let (c, k) = (site.hidden, site.context_dim);
            Some(LayerLora {
                to_q: self.lora(site, "to_q", c, c, rank)?,
                to_k: self.lora(site, "to_k", k, c, rank)?,
                to_v: self.lora(site, "to_v", k, c, rank)?,
                to_out: self.lora(site, "to_out", c, c, rank)?,
            })
        } else {
            None
        };
        // Plain IP-Adapters have no LoRA; every cross layer must carry the id projections.
        let ip = if site.cross {
            Some(IpProjections {
                to_k_ip: self.tensor(site, "to_k_ip.weight", [site.hidden, site.context_dim])?,
                to_v_ip: self.tensor(site, "to_v_ip.weight", [site.hidden, site.context_dim])?,
            })
        } else {
            None
        };
        if lora.is_none() && ip.is_none() {
            return Ok(None);
        }
        Ok(Some(AttentionAdapterLayer {
            index: site.index,
            lora,
            ip,
        }))
    }
}

/// LoRA factors of one projection: `W' = W + up @ down` (scale 1, no alpha in h94's files).
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// `[rank, in]`
    pub down: Tensor,
    /// `[out, rank]`
    pub up: Tensor,
}

#[derive(Debug, Clone)]
pub struct LayerLora {
    pub to_q: LoraPair,
    pub to_k: LoraPair,
    pub to_v: LoraPair,
    /// Fused into `to_out.0`.
    pub to_out: LoraPair,
}

/// Key/value projections of the id tokens (`[hidden, cross_dim]`, no bias).
#[derive(Debug, Clone)]
pub struct IpProjections {
    pub to_k_ip: Tensor,
    pub to_v_ip: Tensor,
}

/// Adapter weights of one UNet attention layer.
#[derive(Debug, Clone)]
pub struct AttentionAdapterLayer {
    /// `N` in the file.
    pub index: usize,
    pub lora: Option<LayerLora>,
    pub ip: Option<IpProjections>,
}

impl AttentionAdapterLayer {
    /// Parameters this layer adds to the UNet once fused (`to_k_ip` + `to_v_ip`).
    pub fn ip_parameter_count(&self) -> usize {
        self.ip
            .as_ref()
            .map_or(0, |ip| ip.to_k_ip.elem_count() + ip.to_v_ip.elem_count())
    }

    /// Elements in the LoRA factors (they are folded into existing weights, adding none).
    pub fn lora_parameter_count(&self) -> usize {
        self.lora.as_ref().map_or(0, |l| {
            [&l.to_q, &l.to_k, &l.to_v, &l.to_out]
                .iter()
                .map(|p| p.down.elem_count() + p.up.elem_count())
                .sum()
        })
    }
}

/// One attention layer of the UNet in diffusers' `attn_processors` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionLayerSite {
    /// `N` in the adapter file.
    pub index: usize,
    /// Path of the `Attention` module, e.g. `up_blocks.1.attentions.2.transformer_blocks.0.attn2`.
    pub path: String,
    /// Query/output width (the block's channel count).
    pub hidden: usize,
    /// Width of the keys' input: `hidden` for self-attention, `cross_attention_dim` for cross.
    pub context_dim: usize,
    /// `attn2` (cross-attention) rather than `attn1`.
    pub cross: bool,
}

/// Every attention layer of a UNet built from `cfg`, in the order that numbers adapter layers.
pub fn attention_layer_sites(cfg: &UNetConfig) -> Result<Vec<AttentionLayerSite>, UNetError> {
    let plan = cfg.block_plan()?;
    let n = plan.len();
    let mut sites = Vec::new();
    let push_transformer =
        |prefix: String, hidden: usize, depth: usize, sites: &mut Vec<AttentionLayerSite>| {
            for t in 0..depth {
                for (attn, cross) in [("attn1", false), ("attn2", true)] {
                    sites.push(AttentionLayerSite {
                        index: sites.len(),
                        path: format!("{prefix}.transformer_blocks.{t}.{attn}"),
                        hidden,
                        context_dim: if cross {
                            cfg.cross_attention_dim
                        } else {
                            hidden
                        },
                        cross,
                    });
                }
            }
        };
    for (i, block) in plan.iter().enumerate() {
        if block.kind == BlockKind::CrossAttention {
            for j in 0..block.layers {
                push_transformer(
                    format!("down_blocks.{i}.attentions.{j}"),
                    block.out_channels,
                    block.transformer_layers,
                    &mut sites,
                );
            }
        }
    }
    for i in 0..n {
        let block = &plan[n - 1 - i];
        if cfg.up_block_kind(i)? == BlockKind::CrossAttention {
            for j in 0..block.layers + 1 {
                push_transformer(
                    format!("up_blocks.{i}.attentions.{j}"),
                    block.out_channels,
                    block.transformer_layers,
                    &mut sites,
                );
            }
        }
    }
    let last = &plan[n - 1];
    push_transformer(
        "mid_block.attentions.0".to_string(),
        last.out_channels,
        last.transformer_layers,
        &mut sites,
    );
    Ok(sites)
}

/// Indices of layers present in an `ip_adapter` map (for diagnostics and tests).
pub fn layer_indices(ip_adapter: &HashMap<String, Tensor>) -> BTreeSet<usize> {
    ip_adapter
        .keys()
        .filter_map(|k| k.split_once('.').and_then(|(n, _)| n.parse().ok()))
        .collect()
}
