//! The contract between the worker and whatever turns a job into images.

use std::fmt;
use std::str::FromStr;

/// How a flagged (NSFW) image is replaced before it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CensorType {
    Black,
    #[default]
    Blur,
    Pixelate,
    SensitiveContentText,
}

impl CensorType {
    pub const ALL: [CensorType; 4] = [
        CensorType::Black,
        CensorType::Blur,
        CensorType::Pixelate,
        CensorType::SensitiveContentText,
    ];

    /// The name used on the wire (`safety_checker_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            CensorType::Black => "black",
            CensorType::Blur => "blur",
            CensorType::Pixelate => "pixelate",
            CensorType::SensitiveContentText => "sensitive_content_text",
        }
    }
}

impl fmt::Display for CensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CensorType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        CensorType::ALL
            .into_iter()
            .find(|c| c.as_str() == wanted)
            .ok_or_else(|| {
                format!("unknown safety_checker_type '{s}'; use black, blur, pixelate or sensitive_content_text")
            })
    }
}

/// A normalised, validated job as the pipeline sees it. Every value here is the one actually
/// used (and echoed in `meta`).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationJob {
    pub prompt: String,
    pub negative_prompt: String,
    /// The face photo as fetched/decoded from the request: encoded bytes (JPEG, PNG, WebP, ...).
    pub face_image: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub num_inference_steps: u32,
    pub guidance_scale: f64,
    /// Shortcut scale of IP-Adapter FaceID PlusV2 ("weight of the face structure"), 0..=2.
    pub s_scale: f64,
    pub samples: u32,
    pub seed: u64,
    /// `None`: the safety checker is off. `Some(t)`: run it, censor flagged images with `t`.
    pub safety_checker: Option<CensorType>,
}

/// An 8-bit RGB image, row-major, `pixels.len() == width * height * 3`.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedImage {
    pub image: RgbImage,
    /// The safety checker flagged this image (it has then been censored already).
    pub nsfw: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GenerationOutput {
    pub images: Vec<GeneratedImage>,
}

impl GenerationOutput {
    pub fn nsfw_content_detected(&self) -> bool {
        self.images.iter().any(|i| i.nsfw)
    }
}

/// Why a job could not be turned into images. The server maps each kind to the wire format.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum GenerationError {
    /// The face image bytes are not a decodable image (corrupt, truncated, too large, not an image).
    #[error("the face image could not be read: {0}")]
    UnreadableImage(String),
    /// The image decoded but no face was detected in it.
    #[error(
        "no face was detected in the face image; send a clear, front-facing photo of one person"
    )]
    NoFace,
    /// The job is well-formed on the wire but this generator cannot honour it.
    #[error("{0}")]
    InvalidInput(String),
    /// Anything else (model failure, out of memory, a panic caught by the worker).
    #[error("generation failed: {0}")]
    Internal(String),
}

/// Turns jobs into images. Implemented by the candle pipeline; owned by one worker thread,
/// which is the only caller, so implementations may be synchronous and hold the device.
pub trait Generator: Send + 'static {
    fn generate(&self, job: &GenerationJob) -> Result<GenerationOutput, GenerationError>;

    /// Runs several compatible jobs together (same size and steps). The default runs them one
    /// by one; batching generators override it. Returns one result per job, in order.
    fn generate_batch(
        &self,
        jobs: &[GenerationJob],
    ) -> Vec<Result<GenerationOutput, GenerationError>> {
        jobs.iter().map(|job| self.generate(job)).collect()
    }

    /// How many images one UNet batch can hold; the worker groups jobs up to this.
    fn max_batch_images(&self) -> usize {
        1
    }
}
