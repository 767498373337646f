//! diffusers' `StableDiffusionSafetyChecker`: a CLIP vision tower (`vision_model.vision_model.*`
//! from transformers 4.x, `vision_model.*` from 5.x),
//! `visual_projection` (no bias), and cosine similarities of the projected image embedding with
//! `concept_embeds` / `special_care_embeds`, compared with the per-concept thresholds
//! `concept_embeds_weights` / `special_care_embeds_weights` stored in the same weights file.
//!
//! The decision reproduces diffusers' `forward` (not `forward_onnx`): scores are
//! `round(cos - threshold + adjustment, 3)` in float32 as numpy computes them; a positive special
//! score raises `adjustment` to 0.01 for every score after it; any positive concept score flags
//! the image. The number of concepts comes from the weights, not from constants.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};
use headshot_core::RgbImage;

use crate::clip_preprocess::{ClipImageProcessor, ClipPreprocessError};
use crate::clip_vision::{ClipConfigError, ClipVisionConfig, ClipVisionTransformer};

/// Added to later scores once a special-care concept matched (diffusers' `adjustment = 0.01`).
const SPECIAL_CARE_ADJUSTMENT: f32 = 0.01;

/// Weight files looked for in a safety checker folder, in order of preference.
pub const WEIGHT_FILES: [&str; 4] = [
    "model.safetensors",
    "model.fp16.safetensors",
    "pytorch_model.bin",
    "pytorch_model.fp16.bin",
];

#[derive(Debug, thiserror::Error)]
pub enum SafetyCheckerError {
    #[error(transparent)]
    Config(#[from] ClipConfigError),
    #[error("the safety checker config {path} is invalid: {message}")]
    InvalidConfig { path: PathBuf, message: String },
    #[error("no safety checker weights in {dir}: expected one of {WEIGHT_FILES:?}")]
    MissingWeights { dir: PathBuf },
    #[error("cannot open the safety checker weights {path}: {source}")]
    OpenWeights {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("safety checker tensor `{name}` has shape {found:?}; expected {expected}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: String,
    },
    #[error("loading the safety checker failed: {0} (is this a StableDiffusionSafetyChecker weights file?)")]
    Load(candle_core::Error),
    #[error("running the safety checker failed: {0}")]
    Run(#[from] candle_core::Error),
    #[error(transparent)]
    Preprocess(#[from] ClipPreprocessError),
}

/// `safety_checker/config.json`: a `CLIPConfig` whose `vision_config` describes the tower and whose
/// top-level `projection_dim` is the width of `visual_projection`.
#[derive(Debug, Clone)]
pub struct SafetyCheckerConfig {
    pub vision: ClipVisionConfig,
    pub projection_dim: usize,
}

impl SafetyCheckerConfig {
    /// `CLIPConfig`'s default `projection_dim` when the key is absent.
    const DEFAULT_PROJECTION_DIM: usize = 512;

    pub fn from_json_str(json: &str, origin: &Path) -> Result<Self, SafetyCheckerError> {
        let vision = ClipVisionConfig::from_json_str(json, origin)?;
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|source| ClipConfigError::Parse {
                path: origin.to_path_buf(),
                source,
            })?;
        let projection_dim = match value.get("projection_dim") {
            None | Some(serde_json::Value::Null) => Self::DEFAULT_PROJECTION_DIM,
            Some(v) => v
                .as_u64()
                .filter(|&d| d > 0)
                .map(|d| d as usize)
                .ok_or_else(|| SafetyCheckerError::InvalidConfig {
                    path: origin.to_path_buf(),
                    message: format!("`projection_dim` must be a positive integer, found {v}"),
                })?,
        };
        Ok(SafetyCheckerConfig {
            vision,
            projection_dim,
        })
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SafetyCheckerError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|source| ClipConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&json, path)
    }
}

/// The checker's decision for one image, with everything diffusers computes on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyVerdict {
    /// Any concept score is positive: the image must be censored.
    pub nsfw: bool,
    /// A special-care concept matched, so 0.01 was added to the later scores.
    pub special_care: bool,
    /// `round(cos - threshold + adjustment, 3)` per concept (diffusers' `concept_scores`).
    pub concept_scores: Vec<f32>,
    /// The same for the special-care concepts (diffusers' `special_scores`).
    pub special_scores: Vec<f32>,
    /// Raw cosine similarities with `concept_embeds`.
    pub concept_cos: Vec<f32>,
    /// Raw cosine similarities with `special_care_embeds`.
    pub special_cos: Vec<f32>,
}

/// numpy's `round(x, 3)` on a float32: scale by 1000 in float32, round half to even, divide.
fn round3(x: f32) -> f32 {
    (x * 1000.0f32).round_ties_even() / 1000.0f32
}

/// diffusers' per-image decision from the cosine similarities and the thresholds.
pub fn verdict_from_similarities(
    special_cos: &[f32],
    concept_cos: &[f32],
    special_thresholds: &[f32],
    concept_thresholds: &[f32],
) -> SafetyVerdict {
    let mut adjustment = 0.0f32;
    let mut special_scores = Vec::with_capacity(special_cos.len());
    for (&cos, &threshold) in special_cos.iter().zip(special_thresholds) {
        let score = round3(cos - threshold + adjustment);
        if score > 0.0 {
            adjustment = SPECIAL_CARE_ADJUSTMENT;
        }
        special_scores.push(score);
    }
    let concept_scores: Vec<f32> = concept_cos
        .iter()
        .zip(concept_thresholds)
        .map(|(&cos, &threshold)| round3(cos - threshold + adjustment))
        .collect();
    SafetyVerdict {
        nsfw: concept_scores.iter().any(|&s| s > 0.0),
        special_care: adjustment > 0.0,
        concept_scores,
        special_scores,
        concept_cos: concept_cos.to_vec(),
        special_cos: special_cos.to_vec(),
    }
}

/// Rows scaled to unit L2 norm (torch's `F.normalize`, eps 1e-12), in f32.
fn normalize_rows(xs: &Tensor) -> candle_core::Result<Tensor> {
    let xs = xs.to_dtype(DType::F32)?;
    let norms = xs
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    xs.broadcast_div(&norms)
}

/// A loaded `StableDiffusionSafetyChecker`.
#[derive(Debug, Clone)]
pub struct SafetyChecker {
    vision: ClipVisionTransformer,
    visual_projection: Linear,
    /// `[N, D]`, already unit-normalised, f32.
    concept_embeds: Tensor,
    /// `[M, D]`, already unit-normalised, f32.
    special_care_embeds: Tensor,
    concept_thresholds: Vec<f32>,
    special_thresholds: Vec<f32>,
    dtype: DType,
}

/// Reads a tensor whose leading size is whatever the file holds, checking the rest of its shape.
fn get_rows(
    vb: &VarBuilder,
    name: &str,
    width: Option<usize>,
) -> Result<Tensor, SafetyCheckerError> {
    let tensor = vb
        .get_unchecked_dtype(name, DType::F32)
        .map_err(SafetyCheckerError::Load)?;
    let ok = match width {
        Some(w) => tensor.dims().len() == 2 && tensor.dims()[1] == w && tensor.dims()[0] > 0,
        None => tensor.dims().len() == 1 && tensor.dims()[0] > 0,
    };
    if !ok {
        let expected = match width {
            Some(w) => format!("[N, {w}] with N >= 1 (N concepts, projection_dim {w})"),
            None => "[N] with N >= 1".to_string(),
        };
        return Err(SafetyCheckerError::Shape {
            name: name.to_string(),
            found: tensor.dims().to_vec(),
            expected,
        });
    }
    Ok(tensor)
}

impl SafetyChecker {
    /// Loads from a `VarBuilder` at the root of the checker's weights (keys `vision_model.*`,
    /// `visual_projection.weight`, `concept_embeds`, ...). Computations run in `vb`'s dtype; the
    /// similarities and scores are always f32.
    pub fn load(vb: VarBuilder, cfg: &SafetyCheckerConfig) -> Result<Self, SafetyCheckerError> {
        let dtype = vb.dtype();
        // StableDiffusionSafetyChecker wraps a CLIPVisionModel, which (before transformers 5)
        // wraps the transformer.
        let vision = crate::weight_layout::SAFETY_CHECKER_VISION
            .load(&vb, |tower| ClipVisionTransformer::load(tower, &cfg.vision))
            .map_err(SafetyCheckerError::Load)?;
        let visual_projection = candle_nn::linear_no_bias(
            cfg.vision.hidden_size,
            cfg.projection_dim,
            vb.pp("visual_projection"),
        )
        .map_err(SafetyCheckerError::Load)?;

        let concept_embeds = get_rows(&vb, "concept_embeds", Some(cfg.projection_dim))?;
        let special_care_embeds = get_rows(&vb, "special_care_embeds", Some(cfg.projection_dim))?;
        let concept_weights = get_rows(&vb, "concept_embeds_weights", None)?;
        let special_weights = get_rows(&vb, "special_care_embeds_weights", None)?;
        let check_count =
            |name: &str, weights: &Tensor, embeds: &Tensor| -> Result<(), SafetyCheckerError> {
                let n = embeds.dims()[0];
                if weights.dims()[0] != n {
                    return Err(SafetyCheckerError::Shape {
                        name: name.to_string(),
                        found: weights.dims().to_vec(),
                        expected: format!("[{n}] (one threshold per embedding)"),
                    });
                }
                Ok(())
            };
        check_count("concept_embeds_weights", &concept_weights, &concept_embeds)?;
        check_count(
            "special_care_embeds_weights",
            &special_weights,
            &special_care_embeds,
        )?;

        let concept_embeds = normalize_rows(&concept_embeds).map_err(SafetyCheckerError::Load)?;
        let special_care_embeds =
            normalize_rows(&special_care_embeds).map_err(SafetyCheckerError::Load)?;
        let concept_thresholds = concept_weights
            .to_vec1::<f32>()
            .map_err(SafetyCheckerError::Load)?;
        let special_thresholds = special_weights
            .to_vec1::<f32>()
            .map_err(SafetyCheckerError::Load)?;
        tracing::debug!(
            concepts = concept_thresholds.len(),
            special = special_thresholds.len(),
            hidden = cfg.vision.hidden_size,
            projection = cfg.projection_dim,
            ?dtype,
            "loaded safety checker"
        );
        Ok(SafetyChecker {
            vision,
            visual_projection,
            concept_embeds,
            special_care_embeds,
            concept_thresholds,
            special_thresholds,
            dtype,
        })
    }

    /// Loads a diffusers `safety_checker/` folder: `config.json` plus the first of
    /// [`WEIGHT_FILES`] present (safetensors memory-mapped, or a torch pickle).
    pub fn from_folder(
        dir: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, SafetyCheckerError> {
        let dir = dir.as_ref();
        let cfg = SafetyCheckerConfig::from_file(dir.join("config.json"))?;
        let weights = WEIGHT_FILES
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| SafetyCheckerError::MissingWeights {
                dir: dir.to_path_buf(),
            })?;
        let open_err = |source| SafetyCheckerError::OpenWeights {
            path: weights.clone(),
            source,
        };
        let vb = if weights.extension().is_some_and(|e| e == "safetensors") {
            // SAFETY: the weights file is mapped read-only and model files are not rewritten while
            // the server runs; this is the usual way candle loads multi-GB checkpoints.
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], dtype, device) }
                .map_err(open_err)?
        } else {
            VarBuilder::from_pth(&weights, dtype, device).map_err(open_err)?
        };
        tracing::info!(path = %weights.display(), "loading safety checker");
        Self::load(vb, &cfg)
    }

    pub fn num_concepts(&self) -> usize {
        self.concept_thresholds.len()
    }

    pub fn num_special_concepts(&self) -> usize {
        self.special_thresholds.len()
    }

    /// Side of the square pixel input the tower expects (224 for ViT-L/14).
    pub fn image_size(&self) -> usize {
        self.vision.config().image_size
    }

    /// `visual_projection(pooled_output)`: `[B, projection_dim]` in the model dtype.
    pub fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor, SafetyCheckerError> {
        let pixels = pixels.to_dtype(self.dtype)?;
        let pooled = self.vision.pooled_output(&pixels)?;
        Ok(self.visual_projection.forward(&pooled)?)
    }

    /// Cosine similarities `([B, M] special, [B, N] concept)`, f32.
    pub fn cosine_similarities(
        &self,
        pixels: &Tensor,
    ) -> Result<(Tensor, Tensor), SafetyCheckerError> {
        let embeds = normalize_rows(&self.image_embeds(pixels)?)?;
        let special = embeds.matmul(&self.special_care_embeds.t()?)?;
        let concept = embeds.matmul(&self.concept_embeds.t()?)?;
        Ok((special, concept))
    }

    /// Runs the checker on CLIP pixel values `[B, 3, S, S]` (see `clip_preprocess`); one verdict per image.
    pub fn check(&self, pixels: &Tensor) -> Result<Vec<SafetyVerdict>, SafetyCheckerError> {
        let (special, concept) = self.cosine_similarities(pixels)?;
        let special = special.to_vec2::<f32>()?;
        let concept = concept.to_vec2::<f32>()?;
        Ok(special
            .iter()
            .zip(&concept)
            .map(|(s, c)| {
                verdict_from_similarities(s, c, &self.special_thresholds, &self.concept_thresholds)
            })
            .collect())
    }

    /// Preprocesses decoded images with the checker's feature extractor and checks them, as
    /// diffusers' `run_safety_checker` does after the VAE.
    pub fn check_images(
        &self,
        processor: &ClipImageProcessor,
        images: &[RgbImage],
        device: &Device,
    ) -> Result<Vec<SafetyVerdict>, SafetyCheckerError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let pixels = processor.preprocess(images, device)?;
        self.check(&pixels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_numpy_float32_round_half_even() {
        assert_eq!(round3(0.0125), 0.012); // 12.5 -> 12
        assert_eq!(round3(0.0135), 0.014);
        assert_eq!(round3(-0.0004), -0.0);
        assert_eq!(round3(0.0005), 0.0); // 0.5 -> 0: not flagged
    }

    #[test]
    fn special_care_raises_later_scores_only() {
        // Special concept 1 matches; concept 0 is just below its threshold and is pushed over it.
        let verdict = verdict_from_similarities(
            &[0.1, 0.6, 0.0],
            &[0.495, 0.1],
            &[0.5, 0.5, 0.5],
            &[0.5, 0.5],
        );
        assert!(verdict.special_care);
        assert_eq!(verdict.special_scores, vec![-0.4, 0.1, -0.49]);
        assert_eq!(verdict.concept_scores, vec![0.005, -0.39]);
        assert!(verdict.nsfw);

        let verdict = verdict_from_similarities(
            &[0.1, 0.2, 0.0],
            &[0.495, 0.1],
            &[0.5, 0.5, 0.5],
            &[0.5, 0.5],
        );
        assert!(!verdict.special_care);
        assert_eq!(verdict.concept_scores, vec![-0.005, -0.4]);
        assert!(!verdict.nsfw);
    }
}
