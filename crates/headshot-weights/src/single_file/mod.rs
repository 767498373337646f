//! Single-file SD1.5 checkpoints in the original (LDM / A1111) layout: one `.safetensors` or
//! `.ckpt` holding the UNet (`model.diffusion_model.*`), the VAE (`first_stage_model.*`) and the
//! CLIP text encoder (`cond_stage_model.transformer.*`), as shared for fine-tunes such as
//! Realistic Vision. Nothing is converted on disk: each part is served to its model through a
//! candle `VarBuilder` backend that renames our (diffusers) tensor names to the file's on
//! request (`names`), reads the tensor lazily (memory-mapped safetensors, or candle's pickle
//! reader, which runs no code from the file) and turns the VAE attention's 1x1 convs into linear
//! weights. Which weights are taken follows diffusers' `from_single_file`: `model.diffusion_model.*`
//! when present (pruned and "EMA-only" files hold the EMA values there; full training files also
//! carry `model_ema.*`, which diffusers ignores by default), else the `model_ema.*` copy.

mod error;
pub mod names;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

pub use error::SingleFileError;
pub use names::UnetLayout;

/// The models a checkpoint holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Unet,
    Vae,
    TextEncoder,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Unet => "UNet",
            Part::Vae => "VAE",
            Part::TextEncoder => "text encoder",
        })
    }
}

/// A part and the structure its names depend on.
#[derive(Clone, Debug)]
pub enum PartLayout {
    Unet(UnetLayout),
    /// `up_blocks`: the decoder's number of up blocks (`len(block_out_channels)`).
    Vae {
        up_blocks: usize,
    },
    TextEncoder,
}

impl PartLayout {
    pub fn part(&self) -> Part {
        match self {
            PartLayout::Unet(_) => Part::Unet,
            PartLayout::Vae { .. } => Part::Vae,
            PartLayout::TextEncoder => Part::TextEncoder,
        }
    }
}

const UNET_PREFIX: &str = "model.diffusion_model.";
const EMA_PREFIX: &str = "model_ema.";
/// diffusers' `LDM_VAE_KEYS`: CompVis' name, and the one some merges save under.
const VAE_PREFIXES: [&str; 2] = ["first_stage_model.", "vae."];
/// CLIP's `CLIPTextModel` under the LDM wrapper, with its `text_model` level (transformers >= 4.x
/// saves) or without (older saves).
const TEXT_PREFIXES: [&str; 2] = [
    "cond_stage_model.transformer.text_model.",
    "cond_stage_model.transformer.",
];
/// diffusers counts an EMA copy only from this many `model_ema.*` keys (its decay and step
/// counters are two more).
const MIN_EMA_KEYS: usize = 100;

/// Where the UNet's weights sit in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnetWeights {
    /// `model.diffusion_model.*` (pruned, EMA-only, or full files: diffusers' default).
    Plain,
    /// Only the `model_ema.*` copy, named with the dots removed (CompVis' LitEma).
    EmaOnly,
}

/// The file's tensors, read lazily.
enum Store {
    Safetensors(MmapedSafetensors),
    Pickle(PthTensors),
}

impl Store {
    fn open(path: &Path) -> Result<Store, SingleFileError> {
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match extension.as_str() {
            "safetensors" => {
                // SAFETY: the checkpoint is a model file resolved by the manifest and is not
                // modified while the models are built from it (mmap requires that).
                unsafe { MmapedSafetensors::new(path) }
                    .map(Store::Safetensors)
                    .map_err(|source| SingleFileError::Unreadable {
                        path: path.to_path_buf(),
                        format: "safetensors",
                        source,
                    })
            }
            "ckpt" | "pt" | "pth" | "bin" => {
                let unreadable = |source| SingleFileError::Unreadable {
                    path: path.to_path_buf(),
                    format: "a torch zip checkpoint",
                    source,
                };
                // Training saves wrap the weights: {"state_dict": {...}, "epoch": ..., ...}; a
                // plain state dict has no such key (candle then errors, and we read the root).
                let tensors = PthTensors::new(path, Some("state_dict"))
                    .or_else(|_| PthTensors::new(path, None))
                    .map_err(unreadable)?;
                Ok(Store::Pickle(tensors))
            }
            _ => Err(SingleFileError::UnknownFormat {
                path: path.to_path_buf(),
                extension,
            }),
        }
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Store::Safetensors(st) => st.tensors().into_iter().map(|(k, _)| k).collect(),
            Store::Pickle(pth) => pth.tensor_infos().keys().cloned().collect(),
        }
    }

    fn dims(&self, key: &str) -> Option<Vec<usize>> {
        match self {
            Store::Safetensors(st) => st.get(key).ok().map(|v| v.shape().to_vec()),
            Store::Pickle(pth) => pth
                .tensor_infos()
                .get(key)
                .map(|i| i.layout.dims().to_vec()),
        }
    }

    fn load(&self, key: &str) -> candle_core::Result<Tensor> {
        match self {
            Store::Safetensors(st) => st.load(key, &Device::Cpu),
            Store::Pickle(pth) => pth
                .get(key)?
                .ok_or_else(|| candle_core::Error::Msg(format!("no tensor {key}"))),
        }
    }
}

/// An opened checkpoint: its key set and where each part sits.
pub struct SingleFile {
    path: PathBuf,
    store: Store,
    keys: HashSet<String>,
    unet: Option<UnetWeights>,
    vae_prefix: Option<&'static str>,
    text_prefix: Option<&'static str>,
}

impl fmt::Debug for SingleFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleFile")
            .field("path", &self.path)
            .field("tensors", &self.keys.len())
            .field("unet", &self.unet)
            .field("vae_prefix", &self.vae_prefix)
            .field("text_prefix", &self.text_prefix)
            .finish()
    }
}

impl SingleFile {
    /// Reads the file's index (header or pickle) and checks it is an SD1.5 checkpoint.
    pub fn open(path: impl AsRef<Path>) -> Result<SingleFile, SingleFileError> {
        let path = path.as_ref().to_path_buf();
        let store = Store::open(&path)?;
        let keys: HashSet<String> = store.keys().into_iter().collect();
        check_architecture(&path, &store, &keys)?;

        let has_prefix = |p: &str| keys.iter().any(|k| k.starts_with(p));
        let ema_keys = keys.iter().filter(|k| k.starts_with(EMA_PREFIX)).count();
        let unet = if has_prefix(UNET_PREFIX) {
            if ema_keys > MIN_EMA_KEYS {
                tracing::info!(checkpoint = %path.display(), "the checkpoint also holds EMA weights; using the non-EMA ones, as diffusers' from_single_file does");
            }
            Some(UnetWeights::Plain)
        } else if ema_keys > MIN_EMA_KEYS {
            Some(UnetWeights::EmaOnly)
        } else {
            None
        };
        let vae_prefix = VAE_PREFIXES.into_iter().find(|p| has_prefix(p));
        let text_prefix = TEXT_PREFIXES
            .into_iter()
            .find(|p| keys.contains(&format!("{p}embeddings.token_embedding.weight")));
        if unet.is_none() && vae_prefix.is_none() && text_prefix.is_none() {
            return Err(not_ldm(&path, &keys));
        }
        Ok(SingleFile {
            path,
            store,
            keys,
            unet,
            vae_prefix,
            text_prefix,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the UNet's weights are taken from, if the file has a UNet.
    pub fn unet_weights(&self) -> Option<UnetWeights> {
        self.unet
    }

    pub fn has(&self, part: Part) -> bool {
        match part {
            Part::Unet => self.unet.is_some(),
            Part::Vae => self.vae_prefix.is_some(),
            Part::TextEncoder => self.text_prefix.is_some(),
        }
    }

    /// The file's key for our tensor `name` of `layout`'s part, if it holds one.
    pub fn file_key(&self, layout: &PartLayout, name: &str) -> Option<String> {
        self.candidate_keys(layout, name)
            .into_iter()
            .find(|k| self.keys.contains(k))
    }

    /// Every key `name` may have in this file (the first is the one to report when missing).
    fn candidate_keys(&self, layout: &PartLayout, name: &str) -> Vec<String> {
        match layout {
            PartLayout::Unet(unet_layout) => {
                let ldm = names::unet_ldm_names(name, unet_layout);
                match self.unet {
                    Some(UnetWeights::EmaOnly) => ldm
                        .iter()
                        .map(|k| format!("{EMA_PREFIX}diffusion_model{}", k.replace('.', "")))
                        .collect(),
                    _ => ldm.iter().map(|k| format!("{UNET_PREFIX}{k}")).collect(),
                }
            }
            PartLayout::Vae { up_blocks } => names::vae_ldm_name(name, *up_blocks)
                .map(|k| format!("{}{k}", self.vae_prefix.unwrap_or(VAE_PREFIXES[0])))
                .into_iter()
                .collect(),
            PartLayout::TextEncoder => name
                .strip_prefix("text_model.")
                .map(|rest| format!("{}{rest}", self.text_prefix.unwrap_or(TEXT_PREFIXES[0])))
                .into_iter()
                .collect(),
        }
    }

    /// Builds one part's model from this file: `build` gets a VarBuilder serving the part under
    /// our names. Every tensor it asks for that the file lacks is collected (it gets zeros
    /// meanwhile, so loading goes on and finds them all) and reported as one error.
    pub fn load<T, E>(
        self: &Arc<Self>,
        layout: PartLayout,
        dtype: DType,
        device: &Device,
        build: impl FnOnce(VarBuilder<'static>) -> Result<T, E>,
    ) -> Result<T, SingleFileError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let part = layout.part();
        if !self.has(part) {
            return Err(SingleFileError::PartMissing {
                path: self.path.clone(),
                part,
                prefix: match part {
                    Part::Unet => UNET_PREFIX,
                    Part::Vae => VAE_PREFIXES[0],
                    Part::TextEncoder => TEXT_PREFIXES[1],
                },
            });
        }
        let missing = Arc::new(Mutex::new(Vec::new()));
        let backend = PartBackend {
            file: Arc::clone(self),
            layout,
            missing: Arc::clone(&missing),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let built = build(vb);
        let missing = std::mem::take(&mut *missing.lock().unwrap_or_else(|e| e.into_inner()));
        if !missing.is_empty() {
            const SHOWN: usize = 5;
            let mut first = missing
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if missing.len() > SHOWN {
                first.push_str(&format!(" and {} more", missing.len() - SHOWN));
            }
            return Err(SingleFileError::MissingTensors {
                path: self.path.clone(),
                part,
                count: missing.len(),
                first,
            });
        }
        built.map_err(|e| SingleFileError::Build {
            path: self.path.clone(),
            part,
            source: e.into(),
        })
    }
}

/// Refuses the architectures that share the layout but not our models.
fn check_architecture(
    path: &Path,
    store: &Store,
    keys: &HashSet<String>,
) -> Result<(), SingleFileError> {
    if keys.iter().any(|k| k.starts_with("conditioner.embedders.")) {
        return Err(SingleFileError::Sdxl {
            path: path.to_path_buf(),
        });
    }
    if keys
        .iter()
        .any(|k| k.starts_with("cond_stage_model.model."))
    {
        return Err(SingleFileError::Sd2 {
            path: path.to_path_buf(),
            evidence: "an OpenCLIP text encoder, `cond_stage_model.model.*`".to_string(),
        });
    }
    // diffusers' own SD2 probe: cross-attention keys of width 1024 (SD1.5: 768).
    let probe = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
    if let Some(dims) = store.dims(probe) {
        if dims.last() == Some(&1024) {
            return Err(SingleFileError::Sd2 {
                path: path.to_path_buf(),
                evidence: "1024-wide cross-attention".to_string(),
            });
        }
    }
    Ok(())
}

fn not_ldm(path: &Path, keys: &HashSet<String>) -> SingleFileError {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let first_keys = if sorted.is_empty() {
        "none (the file holds no tensors)".to_string()
    } else {
        sorted
            .iter()
            .take(3)
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let hint = if keys.iter().any(|k| k.contains("lora_")) {
        " (this looks like a LoRA, not a base model)"
    } else if keys
        .iter()
        .any(|k| k.starts_with("down_blocks.") || k.starts_with("text_model."))
    {
        " (this looks like one part of a diffusers folder; point the manifest's component at it instead)"
    } else {
        ""
    };
    SingleFileError::NotLdm {
        path: path.to_path_buf(),
        first_keys,
        hint,
    }
}

/// The VarBuilder backend of one part.
struct PartBackend {
    file: Arc<SingleFile>,
    layout: PartLayout,
    /// Tensors asked for and not found, in request order.
    missing: Arc<Mutex<Vec<String>>>,
}

impl PartBackend {
    fn record_missing(&self, name: &str) {
        let candidates = self.file.candidate_keys(&self.layout, name);
        let entry = match candidates.first() {
            Some(key) => format!("`{key}` ({name})"),
            None => format!("`{name}` (no LDM name)"),
        };
        self.missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    fn read(&self, name: &str) -> Option<candle_core::Result<(String, Tensor)>> {
        let key = self.file.file_key(&self.layout, name)?;
        Some(self.file.store.load(&key).map(|t| (key, t)))
    }
}

impl SimpleBackend for PartBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let (key, tensor) = match self.read(name) {
            Some(read) => read?,
            None => {
                self.record_missing(name);
                return Tensor::zeros(shape, dtype, dev);
            }
        };
        // LDM stores the VAE attention's projections as 1x1 convs ([C, C, 1, 1]) where our
        // model has linear layers ([C, C]), as diffusers' conv_attn_to_linear converts them.
        let dims = tensor.dims();
        let tensor = if shape.rank() < dims.len()
            && &dims[..shape.rank()] == shape.dims()
            && dims[shape.rank()..].iter().all(|d| *d == 1)
        {
            tensor.reshape(shape.clone())?
        } else {
            tensor
        };
        if tensor.shape() != &shape {
            candle_core::bail!(
                "{}: tensor `{key}` (our {name}) has shape {:?}, the model expects {:?}; \
                 the configured config.json does not match this checkpoint",
                self.file.path.display(),
                tensor.dims(),
                shape.dims()
            );
        }
        tensor.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.read(name) {
            Some(read) => read?.1.to_dtype(dtype)?.to_device(dev),
            None => {
                self.record_missing(name);
                candle_core::bail!("{}: no tensor for {name}", self.file.path.display())
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.file.file_key(&self.layout, name).is_some()
    }
}
