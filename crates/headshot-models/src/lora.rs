//! User LoRAs in kohya / A1111 format (`.safetensors`), merged into a model's weights.
//!
//! A file holds, per adapted module, `{module}.lora_down.weight` `[r, in]` (or `[r, in, kh, kw]`
//! for a conv: LoCon), `{module}.lora_up.weight` `[out, r]` (or `[out, r, 1, 1]`) and an optional
//! scalar `{module}.alpha`. kohya names a module by its path in the model with `.` turned into
//! `_`, behind `lora_unet_` (diffusers' UNet names) or `lora_te_` (transformers' CLIPTextModel
//! names, `text_model.` included). As peft computes it once diffusers has converted the file:
//! `W' = W + strength * (alpha / r) * up @ down`, the conv product taken over the flattened
//! `[in * kh * kw]` axis and reshaped to the conv weight.
//!
//! kohya's names cannot be split back into paths (`_` is in both), so each model's own weight
//! names are spelled the kohya way and looked up instead.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::recorded_weights::RecordedWeights;

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("the LoRA file {path} could not be read as safetensors: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    #[error("the file {path} is not a kohya / A1111 LoRA: {reason}")]
    NotALora { path: PathBuf, reason: String },
    #[error("the LoRA {path} adapts `{module}`, which this model does not have")]
    UnknownModule { path: PathBuf, module: String },
    #[error("the LoRA {path} does not fit `{module}`: {message}")]
    Shape {
        path: PathBuf,
        module: String,
        message: String,
    },
    #[error("merging the LoRA {path} into `{module}` failed: {source}")]
    Merge {
        path: PathBuf,
        module: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("adding the LoRA deltas to the weight `{weight}` failed: {source}")]
    MergeWeight {
        weight: String,
        #[source]
        source: candle_core::Error,
    },
}

/// The two key prefixes of an SD1.x kohya LoRA.
pub const UNET_PREFIX: &str = "lora_unet_";
pub const TEXT_ENCODER_PREFIX: &str = "lora_te_";

/// One adapted module: its factors (f32, CPU) and `alpha / r`.
#[derive(Debug, Clone)]
struct LoraModule {
    down: Tensor,
    up: Tensor,
    scale: f64,
}

/// A LoRA file, read and checked for its own consistency (every module has both factors of one
/// rank); whether it fits a model is checked when merging.
#[derive(Debug, Clone)]
pub struct LoraFile {
    path: PathBuf,
    /// kohya module name (prefix included) -> factors, sorted for a stable merge order.
    modules: BTreeMap<String, LoraModule>,
}

impl LoraFile {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoraError> {
        let path = path.as_ref().to_path_buf();
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|source| {
            LoraError::Read {
                path: path.clone(),
                source,
            }
        })?;
        Self::from_tensors(path, tensors)
    }

    /// `tensors` as read from `path` (named for errors only).
    pub fn from_tensors(
        path: PathBuf,
        tensors: HashMap<String, Tensor>,
    ) -> Result<Self, LoraError> {
        let not_a_lora = |reason: String| LoraError::NotALora {
            path: path.clone(),
            reason,
        };
        let mut parts: BTreeMap<String, [Option<Tensor>; 3]> = BTreeMap::new();
        for (key, tensor) in tensors {
            let (module, slot) = if let Some(m) = key.strip_suffix(".lora_down.weight") {
                (m, 0)
            } else if let Some(m) = key.strip_suffix(".lora_up.weight") {
                (m, 1)
            } else if let Some(m) = key.strip_suffix(".alpha") {
                (m, 2)
            } else {
                return Err(not_a_lora(format!(
                    "unexpected key `{key}` (LoRA keys end in .lora_down.weight, .lora_up.weight or .alpha; LyCORIS LoHa/LoKr and DoRA are not supported)"
                )));
            };
            if !module.starts_with(UNET_PREFIX) && !module.starts_with(TEXT_ENCODER_PREFIX) {
                return Err(not_a_lora(format!(
                    "key `{key}` is neither a UNet ({UNET_PREFIX}...) nor a text encoder ({TEXT_ENCODER_PREFIX}...) key of an SD1.x LoRA"
                )));
            }
            parts.entry(module.to_string()).or_default()[slot] = Some(tensor);
        }
        if parts.is_empty() {
            return Err(not_a_lora("it holds no tensors".into()));
        }
        let mut modules = BTreeMap::new();
        for (name, [down, up, alpha]) in parts {
            let (Some(down), Some(up)) = (down, up) else {
                return Err(not_a_lora(format!(
                    "`{name}` lacks its lora_down or lora_up weight"
                )));
            };
            let shape_err = |message: String| LoraError::Shape {
                path: path.clone(),
                module: name.clone(),
                message,
            };
            let rank = down.dims().first().copied().unwrap_or(0);
            let up_dims = up.dims();
            let factor_ok = matches!(down.rank(), 2 | 4)
                && match up_dims {
                    [_, r] => *r == rank,
                    [_, r, 1, 1] => *r == rank,
                    _ => false,
                };
            if rank == 0 || !factor_ok {
                return Err(shape_err(format!(
                    "lora_down {:?} and lora_up {:?} are not factors of one rank ([r, in(, kh, kw)] and [out, r(, 1, 1)])",
                    down.dims(),
                    up_dims
                )));
            }
            let scale = match alpha {
                None => 1.0,
                Some(alpha) => {
                    let alpha = alpha
                        .to_dtype(DType::F64)
                        .and_then(|a| a.flatten_all())
                        .and_then(|a| a.to_vec1::<f64>())
                        .map_err(|source| LoraError::Merge {
                            path: path.clone(),
                            module: name.clone(),
                            source,
                        })?;
                    match alpha.as_slice() {
                        [a] => a / rank as f64,
                        other => {
                            return Err(shape_err(format!(
                                "alpha must be one number, got {} values",
                                other.len()
                            )))
                        }
                    }
                }
            };
            let f32 = |t: Tensor| {
                t.to_dtype(DType::F32).map_err(|source| LoraError::Merge {
                    path: path.clone(),
                    module: name.clone(),
                    source,
                })
            };
            modules.insert(
                name.clone(),
                LoraModule {
                    down: f32(down)?,
                    up: f32(up)?,
                    scale,
                },
            );
        }
        Ok(Self { path, modules })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many modules the file adapts.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}

/// One model's weights as LoRA files name them: kohya module name -> the weight's full name.
#[derive(Debug, Clone)]
pub struct LoraTargets {
    prefix: &'static str,
    weights: RecordedWeights,
    by_module: HashMap<String, String>,
}

impl LoraTargets {
    /// A diffusers UNet's weights (`down_blocks.0.attentions.0...to_q.weight`).
    pub fn unet(weights: RecordedWeights) -> Self {
        Self::new(UNET_PREFIX, weights, |module| module.to_string())
    }

    /// A CLIPTextModel's weights, stored under `text_model.` (transformers 4.x) or at the root
    /// (5.x): kohya names both `lora_te_text_model_...`.
    pub fn text_encoder(weights: RecordedWeights) -> Self {
        Self::new(TEXT_ENCODER_PREFIX, weights, |module| {
            let inner = module.strip_prefix("text_model.").unwrap_or(module);
            format!("text_model.{inner}")
        })
    }

    fn new(
        prefix: &'static str,
        weights: RecordedWeights,
        module_path: impl Fn(&str) -> String,
    ) -> Self {
        let by_module = weights
            .names()
            .filter_map(|name| {
                let module = name.strip_suffix(".weight")?;
                let kohya = format!("{prefix}{}", module_path(module).replace('.', "_"));
                Some((kohya, name.to_string()))
            })
            .collect();
        Self {
            prefix,
            weights,
            by_module,
        }
    }

    pub fn weights(&self) -> &RecordedWeights {
        &self.weights
    }

    /// The weights `loras` (file, strength) change, each `W + sum(strength * scale * up @ down)`
    /// computed in f32 and stored in `W`'s dtype; every other weight is left out. Every module
    /// of this model's prefix in every file must exist here with matching shapes.
    pub fn merged(&self, loras: &[(&LoraFile, f64)]) -> Result<HashMap<String, Tensor>, LoraError> {
        let mut deltas: BTreeMap<&str, Tensor> = BTreeMap::new();
        for (file, strength) in loras {
            for (module, lora) in file.modules.range(self.prefix.to_string()..) {
                if !module.starts_with(self.prefix) {
                    break;
                }
                let Some(name) = self.by_module.get(module) else {
                    return Err(LoraError::UnknownModule {
                        path: file.path.clone(),
                        module: module.clone(),
                    });
                };
                let weight = self
                    .weights
                    .get(name)
                    .ok_or_else(|| LoraError::UnknownModule {
                        path: file.path.clone(),
                        module: module.clone(),
                    })?;
                let delta = delta(file, module, lora, weight, strength * lora.scale)?;
                let merge_err = |source| LoraError::Merge {
                    path: file.path.clone(),
                    module: module.clone(),
                    source,
                };
                let sum = match deltas.remove(name.as_str()) {
                    Some(previous) => (previous + delta).map_err(merge_err)?,
                    None => delta,
                };
                deltas.insert(name, sum);
            }
        }
        deltas
            .into_iter()
            .map(|(name, delta)| {
                let weight = self.weights.get(name).expect("looked up above");
                let merged = weight
                    .to_dtype(DType::F32)
                    .and_then(|w| w + delta)
                    .and_then(|w| w.to_dtype(weight.dtype()))
                    .map_err(|source| LoraError::MergeWeight {
                        weight: name.to_string(),
                        source,
                    })?;
                Ok((name.to_string(), merged))
            })
            .collect()
    }
}

/// `scale * up @ down` shaped like `weight`, in f32 on `weight`'s device.
fn delta(
    file: &LoraFile,
    module: &str,
    lora: &LoraModule,
    weight: &Tensor,
    scale: f64,
) -> Result<Tensor, LoraError> {
    let shape_err = |message: String| LoraError::Shape {
        path: file.path.clone(),
        module: module.to_string(),
        message,
    };
    let w = weight.dims();
    let (down, up) = (lora.down.dims(), lora.up.dims());
    // Trailing 1s aside (a 1x1 conv adapting a Linear, or the reverse), `down` must span the
    // weight's input axes and `up` its outputs.
    let trim = |d: &[usize]| -> Vec<usize> {
        let mut d = d.to_vec();
        while d.len() > 1 && d.last() == Some(&1) {
            d.pop();
        }
        d
    };
    if w.len() < 2 || trim(&down[1..]) != trim(&w[1..]) || up[0] != w[0] {
        return Err(shape_err(format!(
            "lora_down {down:?} and lora_up {up:?} do not make a delta for the weight {w:?}"
        )));
    }
    let merge_err = |source| LoraError::Merge {
        path: file.path.clone(),
        module: module.to_string(),
        source,
    };
    let rank = down[0];
    let device = weight.device();
    let up = lora
        .up
        .reshape((up[0], rank))
        .and_then(|t| t.to_device(device));
    let down = lora
        .down
        .reshape((rank, lora.down.elem_count() / rank))
        .and_then(|t| t.to_device(device));
    up.and_then(|up| up.matmul(&down?))
        .and_then(|d| d * scale)
        .and_then(|d| d.reshape(w))
        .map_err(merge_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorded_weights::record;
    use candle_nn::VarBuilder;

    fn t(data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
    }

    /// Recorded weights of a "model" with one Linear and one 3x3 conv.
    fn weights() -> RecordedWeights {
        let map = HashMap::from([
            (
                "mid_block.attn.to_q.weight".to_string(),
                t(&[1.0, 0.0, 0.0, 1.0], &[2, 2]),
            ),
            (
                "mid_block.conv1.weight".to_string(),
                Tensor::zeros((2, 1, 3, 3), DType::F32, &Device::Cpu).unwrap(),
            ),
        ]);
        let (vb, rec) = record(VarBuilder::from_tensors(map, DType::F32, &Device::Cpu));
        vb.get((2, 2), "mid_block.attn.to_q.weight").unwrap();
        vb.get((2, 1, 3, 3), "mid_block.conv1.weight").unwrap();
        rec.finish()
    }

    fn file(tensors: Vec<(&str, Tensor)>) -> Result<LoraFile, LoraError> {
        let map = tensors
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        LoraFile::from_tensors(PathBuf::from("style.safetensors"), map)
    }

    #[test]
    fn linear_delta_is_up_down_times_alpha_over_rank_times_strength() {
        // rank 1, alpha 0.5: scale 0.5; strength 0.5 -> 0.25 * [[1*3, 1*4], [2*3, 2*4]].
        let lora = file(vec![
            (
                "lora_unet_mid_block_attn_to_q.lora_down.weight",
                t(&[3.0, 4.0], &[1, 2]),
            ),
            (
                "lora_unet_mid_block_attn_to_q.lora_up.weight",
                t(&[1.0, 2.0], &[2, 1]),
            ),
            (
                "lora_unet_mid_block_attn_to_q.alpha",
                Tensor::new(0.5f32, &Device::Cpu).unwrap(),
            ),
        ])
        .unwrap();
        let merged = LoraTargets::unet(weights())
            .merged(&[(&lora, 0.5)])
            .unwrap();
        assert_eq!(merged.len(), 1, "only the adapted weight is replaced");
        let w = merged["mid_block.attn.to_q.weight"]
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(w, vec![vec![1.75, 1.0], vec![1.5, 3.0]]);
    }

    #[test]
    fn conv_delta_flattens_the_kernel_and_two_files_add_up() {
        let down: Vec<f32> = (0..9).map(|i| i as f32).collect();
        let conv = || {
            file(vec![
                (
                    "lora_unet_mid_block_conv1.lora_down.weight",
                    t(&down, &[1, 1, 3, 3]),
                ),
                (
                    "lora_unet_mid_block_conv1.lora_up.weight",
                    t(&[1.0, -1.0], &[2, 1, 1, 1]),
                ),
            ])
            .unwrap()
        };
        let (a, b) = (conv(), conv());
        let merged = LoraTargets::unet(weights())
            .merged(&[(&a, 1.0), (&b, 0.5)])
            .unwrap();
        let w = merged["mid_block.conv1.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let expected: Vec<f32> = down
            .iter()
            .map(|d| 1.5 * d)
            .chain(down.iter().map(|d| -1.5 * d))
            .collect();
        assert_eq!(w, expected);
    }

    #[test]
    fn text_encoder_names_carry_text_model_in_both_layouts() {
        let map = HashMap::from([(
            "encoder.layers.0.self_attn.q_proj.weight".to_string(),
            Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
        )]);
        let (vb, rec) = record(VarBuilder::from_tensors(map, DType::F32, &Device::Cpu));
        vb.get((2, 2), "encoder.layers.0.self_attn.q_proj.weight")
            .unwrap();
        let lora = file(vec![
            (
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
                t(&[1.0, 1.0], &[1, 2]),
            ),
            (
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
                t(&[1.0, 1.0], &[2, 1]),
            ),
        ])
        .unwrap();
        let merged = LoraTargets::text_encoder(rec.finish())
            .merged(&[(&lora, 1.0)])
            .unwrap();
        assert!(merged.contains_key("encoder.layers.0.self_attn.q_proj.weight"));
        // The UNet's targets take none of it.
        assert!(LoraTargets::unet(weights())
            .merged(&[(&lora, 1.0)])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn errors_name_the_key_or_module() {
        let err = file(vec![("model.diffusion_model.x.weight", t(&[1.0], &[1]))]).unwrap_err();
        assert!(matches!(err, LoraError::NotALora { .. }), "{err}");
        assert!(
            err.to_string().contains("model.diffusion_model.x.weight"),
            "{err}"
        );

        let err = file(vec![(
            "lora_unet_x.lora_down.weight",
            t(&[1.0, 1.0], &[1, 2]),
        )])
        .unwrap_err();
        assert!(
            err.to_string().contains("lacks its lora_down or lora_up"),
            "{err}"
        );

        let unknown = file(vec![
            (
                "lora_unet_down_blocks_9_x.lora_down.weight",
                t(&[1.0, 1.0], &[1, 2]),
            ),
            (
                "lora_unet_down_blocks_9_x.lora_up.weight",
                t(&[1.0, 1.0], &[2, 1]),
            ),
        ])
        .unwrap();
        let err = LoraTargets::unet(weights())
            .merged(&[(&unknown, 1.0)])
            .unwrap_err();
        assert!(
            matches!(err, LoraError::UnknownModule { ref module, .. } if module == "lora_unet_down_blocks_9_x"),
            "{err}"
        );

        let wrong = file(vec![
            (
                "lora_unet_mid_block_attn_to_q.lora_down.weight",
                t(&[1.0, 1.0, 1.0], &[1, 3]),
            ),
            (
                "lora_unet_mid_block_attn_to_q.lora_up.weight",
                t(&[1.0, 1.0], &[2, 1]),
            ),
        ])
        .unwrap();
        let err = LoraTargets::unet(weights())
            .merged(&[(&wrong, 1.0)])
            .unwrap_err();
        assert!(matches!(err, LoraError::Shape { .. }), "{err}");

        let rank_mismatch = file(vec![
            (
                "lora_unet_mid_block_attn_to_q.lora_down.weight",
                t(&[1.0, 1.0], &[1, 2]),
            ),
            (
                "lora_unet_mid_block_attn_to_q.lora_up.weight",
                t(&[1.0, 1.0, 1.0, 1.0], &[2, 2]),
            ),
        ])
        .unwrap_err();
        assert!(
            rank_mismatch
                .to_string()
                .contains("not factors of one rank"),
            "{rank_mismatch}"
        );
    }

    #[test]
    fn a_file_that_is_not_safetensors_is_a_read_error() {
        let dir = std::env::temp_dir().join(format!("lora-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broken.safetensors");
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let err = LoraFile::load(&path).unwrap_err();
        assert!(matches!(err, LoraError::Read { .. }), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
