//! CLIP image preprocessing, numerically identical to transformers' (PIL-based) `CLIPImageProcessor`
//! as diffusers and IP-Adapter use it: resize (shortest edge, Pillow resampling on uint8),
//! centre crop (zero padding when the image is smaller), rescale by `rescale_factor` in f64 then
//! cast to f32, normalise `(x - mean) / std` in f32, RGB, NCHW.
//!
//! Configured from a model folder's `preprocessor_config.json` (both the old integer form
//! `"size": 224, "crop_size": 224` of SD1.5 repos and the dict form are read).

mod pil_resample;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use headshot_core::RgbImage;
use serde_json::Value;

pub use pil_resample::{pil_resize, PilFilter};

#[derive(Debug, thiserror::Error)]
pub enum ClipPreprocessError {
    #[error("cannot read the CLIP preprocessor config {path}: {source} (expected a feature_extractor/preprocessor_config.json)")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CLIP preprocessor config {origin} is invalid: {message}")]
    InvalidConfig { origin: String, message: String },
    #[error("image {index} is {width}x{height} but holds {len} bytes; an RGB image needs width*height*3 bytes")]
    MalformedImage {
        index: usize,
        width: u32,
        height: u32,
        len: usize,
    },
    #[error("image {index} is empty ({width}x{height}); CLIP needs at least one pixel")]
    EmptyImage {
        index: usize,
        width: u32,
        height: u32,
    },
    #[error("no images were given to the CLIP preprocessor")]
    NoImages,
    #[error("building the CLIP pixel tensor failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// How images are resized before the crop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeRule {
    /// Scale so the shorter side becomes this many pixels, keeping the aspect ratio
    /// (transformers' `get_resize_output_image_size(default_to_square=False)`).
    ShortestEdge(u32),
    /// Resize to exactly this size, ignoring the aspect ratio.
    Exact { height: u32, width: u32 },
}

/// The fields of `preprocessor_config.json` that change the pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipImageProcessorConfig {
    /// `None` when `do_resize` is false.
    pub resize: Option<ResizeRule>,
    pub filter: PilFilter,
    /// `(height, width)`; `None` when `do_center_crop` is false.
    pub crop: Option<(u32, u32)>,
    /// `None` when `do_rescale` is false.
    pub rescale_factor: Option<f64>,
    /// `(mean, std)` per RGB channel; `None` when `do_normalize` is false.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// transformers' `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`, as written there (numpy casts them to f32).
const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

impl Default for ClipImageProcessorConfig {
    /// transformers' `CLIPImageProcessor()` defaults (OpenAI CLIP statistics, 224 px).
    fn default() -> Self {
        ClipImageProcessorConfig {
            resize: Some(ResizeRule::ShortestEdge(224)),
            filter: PilFilter::Bicubic,
            crop: Some((224, 224)),
            rescale_factor: Some(1.0 / 255.0),
            normalize: Some((
                OPENAI_CLIP_MEAN.map(|v| v as f32),
                OPENAI_CLIP_STD.map(|v| v as f32),
            )),
        }
    }
}

impl ClipImageProcessorConfig {
    /// Parses the JSON of a `preprocessor_config.json`; `origin` names it in errors.
    pub fn from_json(json: &str, origin: &str) -> Result<Self, ClipPreprocessError> {
        let invalid = |message: String| ClipPreprocessError::InvalidConfig {
            origin: origin.to_string(),
            message,
        };
        let value: Value =
            serde_json::from_str(json).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object".into()))?;
        let defaults = ClipImageProcessorConfig::default();
        let flag = |key: &str| -> Result<bool, ClipPreprocessError> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(true),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(invalid(format!(
                    "`{key}` must be true or false, found {other}"
                ))),
            }
        };

        let resize = if flag("do_resize")? {
            let rule = match object.get("size") {
                None | Some(Value::Null) => defaults.resize.expect("default resizes"),
                Some(size) => parse_resize_rule(size).map_err(invalid)?,
            };
            // Old configs ask for a square resize of the shortest-edge size this way.
            let rule = match (rule, object.get("use_square_size")) {
                (ResizeRule::ShortestEdge(s), Some(Value::Bool(true))) => ResizeRule::Exact {
                    height: s,
                    width: s,
                },
                (rule, _) => rule,
            };
            Some(rule)
        } else {
            None
        };

        let filter = match object.get("resample") {
            None | Some(Value::Null) => defaults.filter,
            Some(code) => {
                let code = code.as_i64().ok_or_else(|| {
                    invalid(format!(
                        "`resample` must be a Pillow filter code, found {code}"
                    ))
                })?;
                PilFilter::from_pil_code(code).ok_or_else(|| {
                    invalid(format!("`resample` = {code} is not supported; use 1 (LANCZOS), 2 (BILINEAR), 3 (BICUBIC), 4 (BOX) or 5 (HAMMING)"))
                })?
            }
        };

        let crop = if flag("do_center_crop")? {
            match object.get("crop_size") {
                None | Some(Value::Null) => defaults.crop,
                Some(size) => Some(parse_crop_size(size).map_err(invalid)?),
            }
        } else {
            None
        };

        let rescale_factor = if flag("do_rescale")? {
            match object.get("rescale_factor") {
                None | Some(Value::Null) => defaults.rescale_factor,
                Some(v) => Some(v.as_f64().ok_or_else(|| {
                    invalid(format!("`rescale_factor` must be a number, found {v}"))
                })?),
            }
        } else {
            None
        };

        let normalize = if flag("do_normalize")? {
            let (default_mean, default_std) = defaults.normalize.expect("default normalises");
            let mean = match object.get("image_mean") {
                None | Some(Value::Null) => default_mean,
                Some(v) => parse_channels(v, "image_mean").map_err(invalid)?,
            };
            let std = match object.get("image_std") {
                None | Some(Value::Null) => default_std,
                Some(v) => parse_channels(v, "image_std").map_err(invalid)?,
            };
            if std.contains(&0.0) {
                return Err(invalid("`image_std` has a zero entry".into()));
            }
            Some((mean, std))
        } else {
            None
        };

        Ok(ClipImageProcessorConfig {
            resize,
            filter,
            crop,
            rescale_factor,
            normalize,
        })
    }
}

fn positive_u32(value: &Value, what: &str) -> Result<u32, String> {
    value
        .as_u64()
        .filter(|&v| v > 0 && v <= u32::MAX as u64)
        .map(|v| v as u32)
        .ok_or_else(|| format!("{what} must be a positive integer, found {value}"))
}

/// transformers' `get_size_dict(size, default_to_square=False)` for `size`.
fn parse_resize_rule(size: &Value) -> Result<ResizeRule, String> {
    match size {
        Value::Number(_) => Ok(ResizeRule::ShortestEdge(positive_u32(size, "`size`")?)),
        Value::Array(items) if items.len() == 2 => Ok(ResizeRule::Exact {
            height: positive_u32(&items[0], "`size[0]` (height)")?,
            width: positive_u32(&items[1], "`size[1]` (width)")?,
        }),
        Value::Object(map) => {
            if let Some(edge) = map.get("shortest_edge") {
                Ok(ResizeRule::ShortestEdge(positive_u32(
                    edge,
                    "`size.shortest_edge`",
                )?))
            } else if let (Some(h), Some(w)) = (map.get("height"), map.get("width")) {
                Ok(ResizeRule::Exact {
                    height: positive_u32(h, "`size.height`")?,
                    width: positive_u32(w, "`size.width`")?,
                })
            } else {
                Err(format!(
                    "`size` must have `shortest_edge` or `height` and `width`, found {size}"
                ))
            }
        }
        other => Err(format!(
            "`size` must be an integer, [height, width] or an object, found {other}"
        )),
    }
}

/// transformers' `get_size_dict(crop_size, default_to_square=True)`: `(height, width)`.
fn parse_crop_size(size: &Value) -> Result<(u32, u32), String> {
    match size {
        Value::Number(_) => {
            let s = positive_u32(size, "`crop_size`")?;
            Ok((s, s))
        }
        Value::Array(items) if items.len() == 2 => Ok((
            positive_u32(&items[0], "`crop_size[0]`")?,
            positive_u32(&items[1], "`crop_size[1]`")?,
        )),
        Value::Object(map) => match (map.get("height"), map.get("width")) {
            (Some(h), Some(w)) => Ok((
                positive_u32(h, "`crop_size.height`")?,
                positive_u32(w, "`crop_size.width`")?,
            )),
            _ => Err(format!(
                "`crop_size` must have `height` and `width`, found {size}"
            )),
        },
        other => Err(format!(
            "`crop_size` must be an integer, [height, width] or an object, found {other}"
        )),
    }
}

fn parse_channels(value: &Value, key: &str) -> Result<[f32; 3], String> {
    let items = match value {
        Value::Array(items) if items.len() == 3 => items,
        // A single number applies to every channel, as transformers allows.
        Value::Number(_) => {
            return value
                .as_f64()
                .map(|v| [v as f32; 3])
                .ok_or_else(|| format!("`{key}` is not a number"))
        }
        other => {
            return Err(format!(
                "`{key}` must be three numbers (R, G, B), found {other}"
            ))
        }
    };
    let mut out = [0f32; 3];
    for (slot, item) in out.iter_mut().zip(items) {
        // numpy builds the mean/std array in the image dtype (float32).
        *slot = item
            .as_f64()
            .ok_or_else(|| format!("`{key}` must hold numbers, found {item}"))?
            as f32;
    }
    Ok(out)
}

/// transformers' `get_resize_output_image_size(size, default_to_square=False)`: the short side
/// becomes `edge`, the long side `int(edge * long / short)`. Returns `(width, height)`.
pub fn shortest_edge_size(width: u32, height: u32, edge: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // Python: int(requested * long / short), a true (double) division truncated.
    let new_long = ((edge as u64 * long as u64) as f64 / short as f64) as u32;
    if width <= height {
        (edge, new_long)
    } else {
        (new_long, edge)
    }
}

/// transformers' `center_crop`: offsets `(orig - crop) // 2` (floor), zero padding when the
/// image is smaller than the crop.
fn center_crop(image: &RgbImage, crop_height: u32, crop_width: u32) -> RgbImage {
    let (h, w) = (image.height as i64, image.width as i64);
    let (ch, cw) = (crop_height as i64, crop_width as i64);
    // Place the original inside a canvas at least as large as the crop, then crop the canvas.
    let (canvas_h, canvas_w) = (h.max(ch), w.max(cw));
    let pad_top = (canvas_h - h + 1) / 2; // ceil((new - orig) / 2)
    let pad_left = (canvas_w - w + 1) / 2;
    let top = (h - ch).div_euclid(2) + pad_top;
    let left = (w - cw).div_euclid(2) + pad_left;
    let mut pixels = vec![0u8; (ch * cw * 3) as usize];
    for y in 0..ch {
        let source_y = top + y - pad_top;
        if source_y < 0 || source_y >= h {
            continue;
        }
        for x in 0..cw {
            let source_x = left + x - pad_left;
            if source_x < 0 || source_x >= w {
                continue;
            }
            let from = ((source_y * w + source_x) * 3) as usize;
            let to = ((y * cw + x) * 3) as usize;
            pixels[to..to + 3].copy_from_slice(&image.pixels[from..from + 3]);
        }
    }
    RgbImage {
        width: crop_width,
        height: crop_height,
        pixels,
    }
}

/// transformers' `CLIPImageProcessor` (the PIL-based one) for RGB images.
#[derive(Clone, Debug)]
pub struct ClipImageProcessor {
    config: ClipImageProcessorConfig,
}

impl ClipImageProcessor {
    pub fn new(config: ClipImageProcessorConfig) -> Self {
        ClipImageProcessor { config }
    }

    /// Reads `preprocessor_config.json` (e.g. a model set's `feature_extractor/` folder).
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self, ClipPreprocessError> {
        let path = path.as_ref();
        let json =
            std::fs::read_to_string(path).map_err(|source| ClipPreprocessError::ReadConfig {
                path: path.to_path_buf(),
                source,
            })?;
        let config = ClipImageProcessorConfig::from_json(&json, &path.display().to_string())?;
        tracing::debug!(?config, path = %path.display(), "loaded CLIP preprocessor config");
        Ok(ClipImageProcessor { config })
    }

    pub fn config(&self) -> &ClipImageProcessorConfig {
        &self.config
    }

    /// The resized and cropped uint8 image, before rescaling (what PIL would hold).
    pub fn resize_and_crop(&self, image: &RgbImage) -> RgbImage {
        let resized = match self.config.resize {
            Some(ResizeRule::ShortestEdge(edge)) => {
                let (w, h) = shortest_edge_size(image.width, image.height, edge);
                pil_resize(image, w, h, self.config.filter)
            }
            Some(ResizeRule::Exact { height, width }) => {
                pil_resize(image, width, height, self.config.filter)
            }
            None => image.clone(),
        };
        match self.config.crop {
            Some((h, w)) if (h, w) != (resized.height, resized.width) => {
                center_crop(&resized, h, w)
            }
            _ => resized,
        }
    }

    /// Pixel values of one image, channel-first (`[3, H, W]` flattened).
    pub fn pixel_values(
        &self,
        image: &RgbImage,
    ) -> Result<(Vec<f32>, u32, u32), ClipPreprocessError> {
        check_image(0, image)?;
        Ok(self.pixel_values_unchecked(image))
    }

    fn pixel_values_unchecked(&self, image: &RgbImage) -> (Vec<f32>, u32, u32) {
        let prepared = self.resize_and_crop(image);
        let plane = (prepared.width * prepared.height) as usize;
        let mut out = vec![0f32; plane * 3];
        for (i, rgb) in prepared.pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                // transformers rescales in float64 and casts to float32, then normalises in float32.
                let mut v = match self.config.rescale_factor {
                    Some(factor) => (rgb[c] as f64 * factor) as f32,
                    None => rgb[c] as f32,
                };
                if let Some((mean, std)) = &self.config.normalize {
                    v = (v - mean[c]) / std[c];
                }
                out[c * plane + i] = v;
            }
        }
        (out, prepared.height, prepared.width)
    }

    /// `pixel_values` of a batch: `[B, 3, H, W]` f32 on `device` (224x224 for CLIP configs).
    /// All images must come out at the same size, which a centre crop guarantees.
    pub fn preprocess(
        &self,
        images: &[RgbImage],
        device: &Device,
    ) -> Result<Tensor, ClipPreprocessError> {
        if images.is_empty() {
            return Err(ClipPreprocessError::NoImages);
        }
        let mut data = Vec::new();
        let mut size = None;
        for (index, image) in images.iter().enumerate() {
            check_image(index, image)?;
            let (values, h, w) = self.pixel_values_unchecked(image);
            match size {
                None => size = Some((h, w)),
                Some(expected) if expected != (h, w) => {
                    return Err(ClipPreprocessError::InvalidConfig {
                        origin: "preprocess".into(),
                        message: format!(
                            "images come out at different sizes ({}x{} and {w}x{h}); enable the centre crop to batch them",
                            expected.1, expected.0
                        ),
                    })
                }
                Some(_) => {}
            }
            data.extend_from_slice(&values);
        }
        let (h, w) = size.expect("at least one image");
        Ok(Tensor::from_vec(
            data,
            (images.len(), 3, h as usize, w as usize),
            device,
        )?)
    }
}

fn check_image(index: usize, image: &RgbImage) -> Result<(), ClipPreprocessError> {
    if image.width == 0 || image.height == 0 {
        return Err(ClipPreprocessError::EmptyImage {
            index,
            width: image.width,
            height: image.height,
        });
    }
    if image.pixels.len() != image.width as usize * image.height as usize * 3 {
        return Err(ClipPreprocessError::MalformedImage {
            index,
            width: image.width,
            height: image.height,
            len: image.pixels.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_matches_transformers_rule() {
        assert_eq!(shortest_edge_size(512, 768, 224), (224, 336));
        assert_eq!(shortest_edge_size(768, 512, 224), (336, 224));
        assert_eq!(shortest_edge_size(640, 427, 224), (335, 224)); // int(224*640/427) = 335
        assert_eq!(shortest_edge_size(224, 224, 224), (224, 224));
    }

    #[test]
    fn crop_offsets_floor_and_pad_like_transformers() {
        // 5 wide -> 2 wide: left = (5 - 2) // 2 = 1.
        let image = RgbImage {
            width: 5,
            height: 1,
            pixels: (0..15).map(|v| v as u8).collect(),
        };
        assert_eq!(center_crop(&image, 1, 2).pixels, vec![3, 4, 5, 6, 7, 8]);
        // 1 wide -> 4 wide: padded with ceil(3/2) = 2 zero columns on the left.
        let image = RgbImage {
            width: 1,
            height: 1,
            pixels: vec![9, 9, 9],
        };
        assert_eq!(
            center_crop(&image, 1, 4).pixels,
            vec![0, 0, 0, 0, 0, 0, 9, 9, 9, 0, 0, 0]
        );
    }

    #[test]
    fn reads_old_integer_config_of_sd15_repos() {
        let json = r#"{"crop_size": 224, "do_center_crop": true, "do_normalize": true, "do_resize": true,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}"#;
        let config = ClipImageProcessorConfig::from_json(json, "test").unwrap();
        assert_eq!(config, ClipImageProcessorConfig::default());
    }

    #[test]
    fn rejects_nearest_with_a_helpful_message() {
        let err =
            ClipImageProcessorConfig::from_json(r#"{"resample": 0}"#, "cfg.json").unwrap_err();
        assert!(err.to_string().contains("resample"), "{err}");
    }
}
