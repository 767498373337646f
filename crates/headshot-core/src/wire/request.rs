//! The head shot request: loose JSON in, one normalised request out (or field -> messages).
//! The rules follow shared/spec/wire.md: out-of-range values are normalised, never rejected,
//! because the official SDK itself sends out-of-range defaults (`num_inference_steps=20`,
//! `s_scale=7.5`).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::limits::TextLimits;
use super::loose::{as_bool, as_f64, as_integer, as_text, as_u64, present};
use super::model_choice::parse_model_choice;
use super::response::Meta;
use crate::job::{CensorType, GenerationJob, JobSettings};
use crate::model_choice::ModelChoice;

/// Accepted step counts; any other value snaps to the nearest (ties go to the smaller).
pub const ALLOWED_STEPS: [u32; 3] = [21, 31, 41];
pub const DEFAULT_STEPS: u32 = 21;
pub const DEFAULT_GUIDANCE_SCALE: f64 = 7.5;
/// Guidance outside this range is clamped: below 1 diffusers disables guidance anyway, and far
/// above 20 SD1.5 only produces saturated noise.
pub const GUIDANCE_SCALE_RANGE: (f64, f64) = (1.0, 20.0);
pub const DEFAULT_S_SCALE: f64 = 1.0;
pub const S_SCALE_RANGE: (f64, f64) = (0.0, 2.0);
pub const DEFAULT_SIZE: u32 = 512;
/// The documented limit is 512x768 in either orientation: the short side at most 512, the long
/// side at most 768. Larger requests are scaled down keeping their aspect ratio.
pub const MAX_SHORT_SIDE: u32 = 512;
pub const MAX_LONG_SIDE: u32 = 768;
/// Smallest side we generate (one 8x8 latent tile per UNet level).
pub const MIN_SIDE: u32 = 64;
pub const MAX_SAMPLES: u32 = 2;
/// Longest `style`, in characters (it is echoed in every answer and stored with the job).
pub const MAX_STYLE_CHARS: usize = 100;
/// Above this many pixels only one sample is made, as the documentation says for 512x768.
pub const MULTI_SAMPLE_MAX_PIXELS: u32 = 512 * 512;

/// Where the face photo comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum FaceImageInput {
    /// An http(s) URL the server must download (with its SSRF guard).
    Url(String),
    /// Bytes decoded from a data URI or raw base64 in the request.
    Inline {
        bytes: Vec<u8>,
        mime: Option<String>,
    },
}

impl fmt::Debug for FaceImageInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaceImageInput::Url(url) => write!(f, "Url({url})"),
            FaceImageInput::Inline { bytes, mime } => {
                write!(f, "Inline({} bytes, {mime:?})", bytes.len())
            }
        }
    }
}

impl FaceImageInput {
    /// What `meta.face_image` shows: the URL as sent, or a short description of inline data
    /// (echoing megabytes of base64 back would bloat every response and job record).
    pub fn echo(&self) -> String {
        match self {
            FaceImageInput::Url(url) => url.clone(),
            FaceImageInput::Inline { bytes, mime } => format!(
                "data:{};base64 ({} bytes)",
                mime.as_deref().unwrap_or("application/octet-stream"),
                bytes.len()
            ),
        }
    }
}

/// Field name -> messages, serialised as the hosted service does:
/// `{"prompt":["The prompt field is required."]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidationErrors(pub BTreeMap<String, Vec<String>>);

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(field: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_string())
            .or_default()
            .push(message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect(),
        )
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for messages in self.0.values() {
            for m in messages {
                if !first {
                    f.write_str(" ")?;
                }
                f.write_str(m)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// A head shot request after loose parsing and normalisation: every value is the one used.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadShotRequest {
    /// The API key from the body, if any (the server also accepts a `key` header).
    pub key: Option<String>,
    pub prompt: String,
    pub negative_prompt: String,
    pub face_image: FaceImageInput,
    /// Further photos of the same person (`face_image` sent as a list; our addition).
    pub more_face_images: Vec<FaceImageInput>,
    pub width: u32,
    pub height: u32,
    pub num_inference_steps: u32,
    pub guidance_scale: f64,
    pub s_scale: f64,
    pub samples: u32,
    pub seed: u64,
    /// Whether the seed was chosen by us (the request had none).
    pub seed_was_random: bool,
    pub safety_checker: bool,
    pub safety_checker_type: CensorType,
    /// Outputs as `.base64` files holding a data URI instead of `.png`.
    pub base64: bool,
    pub webhook: Option<String>,
    /// Echoed exactly as sent (string, number, ...) in webhook bodies.
    pub track_id: Option<Value>,
    /// Our addition: which face of the photo to use, by size (0: the largest, the default).
    pub face_index: u32,
    /// Our addition (best-of-N): images to generate, of which the `samples` most like the input
    /// face are returned; 0 when not sent (no selection).
    pub candidates: u32,
    /// `style` as sent (the official SDK sends "realistic" by default). The hosted API
    /// documents no effect, so it is not a job setting; it is echoed beside `meta`.
    pub style: Option<String>,
    /// `model_id`, `lora_model`, `scheduler`, ...: the names of ModelsLab's other v6 image
    /// endpoints. Whether the named model set and LoRAs exist is checked by the server.
    pub model: ModelChoice,
}

/// The most photos `face_image` may list.
pub const MAX_FACE_IMAGES: usize = 4;

/// The most candidates a request may ask for; the model set's batch limit may allow fewer.
pub const MAX_CANDIDATES: u32 = 16;

impl HeadShotRequest {
    /// Parses and normalises a request body with the default [`TextLimits`].
    pub fn from_json(body: &Value, random_seed: u32) -> Result<Self, ValidationErrors> {
        Self::from_json_with_limits(body, random_seed, &TextLimits::default())
    }

    /// Parses and normalises a request body. `random_seed` is used when the request has no seed
    /// (the caller draws it, so this stays a pure function).
    pub fn from_json_with_limits(
        body: &Value,
        random_seed: u32,
        limits: &TextLimits,
    ) -> Result<Self, ValidationErrors> {
        let empty = Map::new();
        let fields = match body {
            Value::Object(map) => map,
            // A body that is JSON but not an object carries no fields: report what is missing.
            _ => &empty,
        };
        let mut errors = ValidationErrors::new();
        let get = |name: &str| present(fields.get(name));

        let key = get("key").and_then(|v| as_text(v).ok());

        let prompt = match get("prompt").map(as_text) {
            None => {
                errors.add("prompt", "The prompt field is required.");
                String::new()
            }
            Some(Err(_)) => {
                errors.add("prompt", "The prompt must be a string.");
                String::new()
            }
            Some(Ok(p)) => p,
        };
        TextLimits::check_chars(
            &mut errors,
            "prompt",
            "prompt",
            &prompt,
            limits.max_prompt_chars,
        );
        let negative_prompt = match get("negative_prompt").map(as_text) {
            None => String::new(),
            Some(Ok(p)) => p,
            Some(Err(_)) => {
                errors.add("negative_prompt", "The negative prompt must be a string.");
                String::new()
            }
        };
        TextLimits::check_chars(
            &mut errors,
            "negative_prompt",
            "negative prompt",
            &negative_prompt,
            limits.max_prompt_chars,
        );

        // `image` is an alias used by some clients; `face_image` wins when both are set. A list
        // holds several photos of the same person (our addition), at most MAX_FACE_IMAGES.
        let (face_image, more_face_images) = match get("face_image").or_else(|| get("image")) {
            None => {
                errors.add("face_image", "The face image field is required.");
                (None, Vec::new())
            }
            Some(Value::Array(list)) if list.is_empty() => {
                errors.add("face_image", "The face image list is empty.");
                (None, Vec::new())
            }
            Some(Value::Array(list)) if list.len() > MAX_FACE_IMAGES => {
                errors.add(
                    "face_image",
                    format!(
                        "The face image list may hold at most {MAX_FACE_IMAGES} photos, got {}.",
                        list.len()
                    ),
                );
                (None, Vec::new())
            }
            Some(Value::Array(list)) => {
                let total = list.len();
                let mut photos = list.iter().enumerate().filter_map(|(i, item)| {
                    one_face_image(item, limits, &mut errors, Some((i + 1, total)))
                });
                let first = photos.next();
                let more: Vec<FaceImageInput> = photos.collect();
                if more.len() + 1 == total {
                    (first, more)
                } else {
                    (None, Vec::new())
                }
            }
            Some(item) => (one_face_image(item, limits, &mut errors, None), Vec::new()),
        };

        let mut integer = |name: &str, label: &str| -> Option<i64> {
            match get(name).map(as_integer) {
                None => None,
                Some(Ok(i)) => Some(i),
                Some(Err(_)) => {
                    errors.add(name, format!("The {label} must be an integer."));
                    None
                }
            }
        };
        let width = integer("width", "width");
        let height = integer("height", "height");
        let steps = integer("num_inference_steps", "num inference steps");
        let samples = integer("samples", "samples");
        let face_index = integer("face_index", "face index");
        let candidates = integer("candidates", "candidates");

        let mut number = |name: &str, label: &str| -> Option<f64> {
            match get(name).map(as_f64) {
                None => None,
                Some(Ok(x)) => Some(x),
                Some(Err(_)) => {
                    errors.add(name, format!("The {label} must be a number."));
                    None
                }
            }
        };
        let guidance_scale = number("guidance_scale", "guidance scale");
        let s_scale = number("s_scale", "s scale");

        let mut boolean = |name: &str, label: &str, default: bool| -> bool {
            match get(name).map(as_bool) {
                None => default,
                Some(Ok(b)) => b,
                Some(Err(_)) => {
                    errors.add(name, format!("The {label} field must be true or false."));
                    default
                }
            }
        };
        // The official SDK defaults the safety checker to on; so do we.
        let safety_checker = boolean("safety_checker", "safety checker", true);
        let base64 = boolean("base64", "base64", false);

        let safety_checker_type = match get("safety_checker_type") {
            Some(v) => match as_text(v).ok().and_then(|s| s.parse::<CensorType>().ok()) {
                Some(t) => t,
                None => {
                    errors.add(
                        "safety_checker_type",
                        "The selected safety checker type is invalid; use black, blur, pixelate or sensitive_content_text.",
                    );
                    CensorType::default()
                }
            },
            // Some clients send the type under `type`; other values of `type` are ignored.
            None => get("type")
                .and_then(|v| as_text(v).ok())
                .and_then(|s| s.parse::<CensorType>().ok())
                .unwrap_or_default(),
        };

        let (seed, seed_was_random) = match get("seed") {
            None => (u64::from(random_seed), true),
            Some(v) => match as_u64(v) {
                Ok(seed) => (seed, false),
                // Negative seeds (often -1) conventionally mean "random".
                Err(_) if as_integer(v).is_ok_and(|i| i < 0) => (u64::from(random_seed), true),
                Err(_) => {
                    errors.add("seed", "The seed must be an integer.");
                    (0, false)
                }
            },
        };

        let webhook = match get("webhook").map(as_text) {
            None => None,
            Some(Ok(url)) if is_http_url(url.trim()) => {
                let url = url.trim().to_string();
                TextLimits::check_chars(
                    &mut errors,
                    "webhook",
                    "webhook URL",
                    &url,
                    limits.max_url_chars,
                );
                Some(url)
            }
            Some(_) => {
                errors.add("webhook", "The webhook must be a valid http(s) URL.");
                None
            }
        };
        let style = match get("style") {
            None => None,
            Some(Value::String(style)) => {
                TextLimits::check_chars(&mut errors, "style", "style", style, MAX_STYLE_CHARS);
                Some(style.clone())
            }
            Some(_) => {
                errors.add("style", "The style must be a string.");
                None
            }
        };
        let model = parse_model_choice(fields, &mut errors);
        let track_id = get("track_id").cloned();
        if let Some(track_id) = &track_id {
            limits.check_track_id(&mut errors, track_id);
        }

        let face_index = match face_index.map(u32::try_from) {
            None => 0,
            Some(Ok(index)) => index,
            Some(Err(_)) => {
                errors.add(
                    "face_index",
                    "The face index must be 0 (the largest face) or more, up to the number of faces in the photo minus one.",
                );
                0
            }
        };
        let (width, height) = normalise_size(width, height);
        let samples = normalise_samples(samples, width, height);
        let candidates = match candidates {
            None => 0,
            Some(n) if (1..=i64::from(MAX_CANDIDATES)).contains(&n) && n >= i64::from(samples) => {
                n as u32
            }
            Some(_) => {
                errors.add(
                    "candidates",
                    format!(
                        "The candidates must be at least the number of samples ({samples}) and at most {MAX_CANDIDATES}."
                    ),
                );
                0
            }
        };

        match face_image {
            Some(face_image) if errors.is_empty() => Ok(HeadShotRequest {
                key,
                prompt,
                negative_prompt,
                face_image,
                more_face_images,
                width,
                height,
                num_inference_steps: snap_steps(steps),
                guidance_scale: clamp_or_default(
                    guidance_scale,
                    GUIDANCE_SCALE_RANGE,
                    DEFAULT_GUIDANCE_SCALE,
                ),
                s_scale: clamp_or_default(s_scale, S_SCALE_RANGE, DEFAULT_S_SCALE),
                samples,
                seed,
                seed_was_random,
                safety_checker,
                safety_checker_type,
                base64,
                webhook,
                track_id,
                face_index,
                candidates,
                style,
                model,
            }),
            _ => Err(errors),
        }
    }

    /// The job handed to the generator, with the face image bytes the server obtained (the
    /// first photo, then the further ones in order).
    pub fn to_job(&self, face_image: Vec<u8>, more_face_images: Vec<Vec<u8>>) -> GenerationJob {
        GenerationJob {
            settings: JobSettings {
                prompt: self.prompt.clone(),
                negative_prompt: self.negative_prompt.clone(),
                width: self.width,
                height: self.height,
                num_inference_steps: self.num_inference_steps,
                guidance_scale: self.guidance_scale,
                s_scale: self.s_scale,
                samples: self.samples,
                seed: self.seed,
                safety_checker: self.safety_checker.then_some(self.safety_checker_type),
                face_index: self.face_index,
                candidates: self.candidates,
                model: self.model.clone(),
            },
            face_image,
            more_face_images,
        }
    }

    /// The `meta` object of responses: exactly the documented keys, with the values used.
    pub fn meta(&self, file_prefix: &str) -> Meta {
        Meta {
            base64: yes_no(self.base64),
            face_image: std::iter::once(&self.face_image)
                .chain(&self.more_face_images)
                .map(FaceImageInput::echo)
                .collect::<Vec<_>>()
                .join(", "),
            file_prefix: file_prefix.to_string(),
            guidance_scale: self.guidance_scale,
            height: self.height,
            negative_prompt: self.negative_prompt.clone(),
            num_inference_steps: self.num_inference_steps,
            outdir: "out".to_string(),
            prompt: self.prompt.clone(),
            safety_checker: yes_no(self.safety_checker),
            safety_checker_type: self.safety_checker_type.as_str().to_string(),
            samples: self.samples,
            seed: self.seed,
            temp: "yes".to_string(),
            width: self.width,
        }
    }
}

/// One face image string of the request; `position` is (n, total) for an item of a list, named
/// in its error messages.
fn one_face_image(
    item: &Value,
    limits: &TextLimits,
    errors: &mut ValidationErrors,
    position: Option<(usize, usize)>,
) -> Option<FaceImageInput> {
    let mut refuse = |message: String| {
        let message = match position {
            Some((n, total)) => {
                format!(
                    "The face image {n} of {total} cannot be used: {}",
                    lower_first(&message)
                )
            }
            None => message,
        };
        errors.add("face_image", message);
        None
    };
    let Value::String(s) = item else {
        return refuse("The face image must be a URL, a data URI or base64 image data.".into());
    };
    match parse_face_image(s) {
        Ok(FaceImageInput::Url(url)) if url.chars().nth(limits.max_url_chars).is_some() => {
            refuse(format!(
                "The face image URL may not be greater than {} characters.",
                limits.max_url_chars
            ))
        }
        Ok(input) => Some(input),
        Err(message) => refuse(message),
    }
}

/// `message` with its first letter in lower case, to follow a colon.
pub fn lower_first(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// `http://` or `https://` with something after it (full URL checks happen in the server).
pub fn is_http_url(s: &str) -> bool {
    let lower = s.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    let rest = if lower.starts_with("https://") {
        &s[8..]
    } else if lower.starts_with("http://") {
        &s[7..]
    } else {
        return false;
    };
    !rest.is_empty() && !rest.chars().any(char::is_whitespace)
}

/// A face image string: an http(s) URL, a `data:<mime>;base64,<data>` URI, or raw base64.
pub fn parse_face_image(raw: &str) -> Result<FaceImageInput, String> {
    let s = raw.trim();
    if is_http_url(s) {
        return Ok(FaceImageInput::Url(s.to_string()));
    }
    if let Some(rest) = s.strip_prefix("data:") {
        let Some((header, data)) = rest.split_once(',') else {
            return Err("The face image data URI has no ',' before its data.".to_string());
        };
        let mut parts = header.split(';');
        let mime = parts.next().filter(|m| !m.is_empty()).map(str::to_string);
        if !parts.any(|p| p.eq_ignore_ascii_case("base64")) {
            return Err(
                "The face image data URI must be base64 encoded (data:image/jpeg;base64,...)."
                    .to_string(),
            );
        }
        let bytes = decode_base64(data).ok_or_else(|| {
            "The face image data URI does not hold valid base64 data.".to_string()
        })?;
        return Ok(FaceImageInput::Inline { bytes, mime });
    }
    match decode_base64(s) {
        Some(bytes) => Ok(FaceImageInput::Inline { bytes, mime: None }),
        None => Err(
            "The face image must be an http(s) URL, a data URI or base64 image data.".to_string(),
        ),
    }
}

/// Standard or URL-safe base64, padded or not, with line breaks/spaces tolerated.
fn decode_base64(data: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return None;
    }
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(&compact).ok())
        .filter(|bytes| !bytes.is_empty())
}

/// Snaps to the nearest allowed step count (ties to the smaller); absent -> the default.
pub fn snap_steps(requested: Option<i64>) -> u32 {
    let Some(requested) = requested else {
        return DEFAULT_STEPS;
    };
    ALLOWED_STEPS
        .iter()
        .copied()
        .min_by_key(|&allowed| (i128::from(allowed) - i128::from(requested)).unsigned_abs())
        .unwrap_or(DEFAULT_STEPS)
}

fn clamp_or_default(value: Option<f64>, (lo, hi): (f64, f64), default: f64) -> f64 {
    value.map_or(default, |x| x.clamp(lo, hi))
}

/// Width/height: default 512, scaled down (aspect kept) to fit 512x768 in either orientation,
/// rounded to the nearest multiple of 8 (never above the limit), at least 64.
pub fn normalise_size(width: Option<i64>, height: Option<i64>) -> (u32, u32) {
    let side = |v: Option<i64>| -> f64 {
        v.map_or(f64::from(DEFAULT_SIZE), |v| {
            v.clamp(i64::from(MIN_SIDE), 1 << 20) as f64
        })
    };
    let (w, h) = (side(width), side(height));
    let (long, short) = if w >= h { (w, h) } else { (h, w) };
    let scale = (f64::from(MAX_LONG_SIDE) / long)
        .min(f64::from(MAX_SHORT_SIDE) / short)
        .min(1.0);
    let round8 = |x: f64, max: u32| -> u32 {
        let nearest = ((x / 8.0).round() as u32) * 8;
        let limited = if nearest > max { max / 8 * 8 } else { nearest };
        limited.max(MIN_SIDE)
    };
    let (max_w, max_h) = if w >= h {
        (MAX_LONG_SIDE, MAX_SHORT_SIDE)
    } else {
        (MAX_SHORT_SIDE, MAX_LONG_SIDE)
    };
    (round8(w * scale, max_w), round8(h * scale, max_h))
}

/// Samples clamped to 1..=2; only one above 512x512 pixels, as documented.
pub fn normalise_samples(samples: Option<i64>, width: u32, height: u32) -> u32 {
    let requested = samples.unwrap_or(1).clamp(1, i64::from(MAX_SAMPLES)) as u32;
    if width * height > MULTI_SAMPLE_MAX_PIXELS {
        1
    } else {
        requested
    }
}

/// A fetch request body: `{"key": ..., "request_id": ...}` (`/api/v6/images/fetch`), or only
/// the key when the id is in the path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchRequest {
    pub key: Option<String>,
    /// `None` when absent or not an id we could ever have issued (then: "Request not found").
    pub request_id: Option<u64>,
    /// Whether a request id was given at all (even an unparsable one).
    pub request_id_given: bool,
}

impl FetchRequest {
    pub fn from_json(body: &Value) -> Self {
        let get = |name: &str| match body {
            Value::Object(map) => present(map.get(name)),
            _ => None,
        };
        let id_value = get("request_id").or_else(|| get("id"));
        FetchRequest {
            key: get("key").and_then(|v| as_text(v).ok()),
            request_id: id_value.and_then(|v| as_u64(v).ok()),
            request_id_given: id_value.is_some(),
        }
    }
}

/// Parses the `{id}` path segment of fetch URLs.
pub fn parse_request_id(segment: &str) -> Option<u64> {
    segment.trim().parse::<u64>().ok()
}
