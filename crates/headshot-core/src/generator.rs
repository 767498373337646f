//! The contracts of the two stages that run models: the prepare stage ([`FacePreparer`]: photo
//! to analysed face, CPU work) and the device stage ([`Generator`]: prepared jobs to images),
//! and what they hand back.

use std::error::Error;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::job::{GenerationJob, JobLimits, PreparedFace, PreparedJob};

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
#[derive(Debug, thiserror::Error, Clone)]
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
    /// The job was cancelled (before it ran, or between two denoising steps).
    #[error("the job was cancelled")]
    Cancelled,
    /// Anything else (model failure, out of memory, a panic caught by the worker). The cause
    /// is kept for the log; the client gets a fixed message.
    #[error("generation failed: {message}")]
    Internal {
        message: String,
        #[source]
        source: Option<Arc<dyn Error + Send + Sync>>,
    },
}

impl GenerationError {
    /// An internal failure without an underlying error (a panic, a missing result).
    pub fn internal(message: impl Into<String>) -> Self {
        GenerationError::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// An internal failure caused by `source`, which logs show as a chain.
    pub fn internal_from(
        message: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        GenerationError::Internal {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

/// Equal kinds with equal messages (causes are for logs, not for comparing).
impl PartialEq for GenerationError {
    fn eq(&self, other: &Self) -> bool {
        use GenerationError::*;
        match (self, other) {
            (UnreadableImage(a), UnreadableImage(b)) | (InvalidInput(a), InvalidInput(b)) => a == b,
            (NoFace, NoFace) | (Cancelled, Cancelled) => true,
            (Internal { message: a, .. }, Internal { message: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// An error and all its causes, `outer: inner: innermost`, for log lines.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        // `#[error(transparent)]` and `{0}`-style messages repeat their cause; say it once.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

/// The prepare stage's model work: decode the photo with limits, detect faces, take the
/// `face_index`-th by size (0: the largest), align it and embed it. Shared by the prepare
/// pool's threads, hence `Sync`.
pub trait FacePreparer: Send + Sync + 'static {
    fn prepare_face(
        &self,
        photo: &[u8],
        face_index: usize,
    ) -> Result<PreparedFace, GenerationError>;
}

/// The whole prepare stage for one job: the one check against the generator's limits, then
/// face analysis. A job refused here never reaches a device.
///
/// Several photos of one person: `face_index` picks the face in the first photo, each further
/// photo gives its largest face; the identity is the mean of their embeddings, L2-normalised
/// again, and every 224 px crop goes on to the device stage (which averages their CLIP
/// features). A photo that cannot be used fails the job with its position in the list. One
/// photo takes exactly the single-photo path.
pub fn prepare_job(
    job: GenerationJob,
    limits: &JobLimits,
    faces: &dyn FacePreparer,
) -> Result<PreparedJob, GenerationError> {
    job.settings.validate(limits)?;
    let total = 1 + job.more_face_images.len();
    let in_list = |position: usize, error: GenerationError| match error {
        GenerationError::Internal { .. } => error,
        _ if total == 1 => error,
        other => GenerationError::InvalidInput(format!(
            "Face image {position} of {total} cannot be used: {other}"
        )),
    };
    let mut face = faces
        .prepare_face(&job.face_image, job.settings.face_index as usize)
        .map_err(|e| in_list(1, e))?;
    if total > 1 {
        let mut sum: Vec<f64> = face.id_embedding.iter().map(|&v| f64::from(v)).collect();
        for (i, photo) in job.more_face_images.iter().enumerate() {
            let more = faces
                .prepare_face(photo, 0)
                .map_err(|e| in_list(i + 2, e))?;
            if more.id_embedding.len() != sum.len() {
                return Err(GenerationError::internal(
                    "face embeddings of different lengths",
                ));
            }
            sum.iter_mut()
                .zip(&more.id_embedding)
                .for_each(|(s, &v)| *s += f64::from(v));
            face.more_aligned_224.push(more.aligned_224);
        }
        let norm = sum.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(GenerationError::InvalidInput(
                "the face images show identities that cancel out; send photos of one person".into(),
            ));
        }
        face.id_embedding = sum.iter().map(|v| (v / norm) as f32).collect();
    }
    Ok(PreparedJob {
        settings: job.settings,
        face,
    })
}

/// Watches a batch's denoising loop: told after every step, and asked whether to go on.
/// Implemented by the device thread (progress, cancellation); `()` watches nothing.
pub trait StepObserver: Sync {
    /// `done` of `total` denoising steps are finished (1-based). `Break` stops the batch:
    /// every job of it then fails with [`GenerationError::Cancelled`].
    fn step_done(&self, done: usize, total: usize) -> ControlFlow<()>;
}

impl StepObserver for () {
    fn step_done(&self, _done: usize, _total: usize) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

/// The finish stage's model work: how much the face in a generated image looks like the job's
/// identity. Implemented by the face analyzer, which runs beside the device loop, never on it.
pub trait LikenessScorer: Send + Sync + 'static {
    /// The cosine similarity between `identity` (the job's ArcFace embedding) and the embedding
    /// of the largest face in `image`, as insightface's `compute_sim`; `None` when `image` shows
    /// no face.
    fn likeness(&self, identity: &[f32], image: &RgbImage) -> Result<Option<f32>, GenerationError>;
}

/// insightface's `compute_sim`: `dot(a, b) / (|a| |b|)` (0 for a zero vector).
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator == 0.0 {
        0.0
    } else {
        (dot / denominator) as f32
    }
}

/// What a generator runs on and what it loaded, for operators (`system_details`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratorInfo {
    /// The device as configured, e.g. `cpu`, `cuda:0`, `metal:0`.
    pub device: String,
    /// `cpu`, `cuda`, `metal`, or `unknown` for generators that do not say.
    pub kind: String,
    /// The model set's name (its manifest's `name`).
    pub models: String,
}

/// One base model a generator can run (`model_id` picks it), for operators: whether it is in
/// device memory now and how much it takes there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSetState {
    /// The `model_id` that picks it (the default set: its manifest's name).
    pub id: String,
    /// The set jobs without `model_id` get; always loaded.
    pub is_default: bool,
    pub loaded: bool,
    /// Its weights' memory, once it has been loaded (kept after it is unloaded).
    pub bytes: Option<u64>,
}

impl Default for GeneratorInfo {
    fn default() -> Self {
        GeneratorInfo {
            device: "unknown".to_string(),
            kind: "unknown".to_string(),
            models: "unknown".to_string(),
        }
    }
}

/// Turns prepared jobs into images. Implemented by the candle pipeline; owned by one device
/// thread, which is the only caller, so implementations may be synchronous and hold the device.
pub trait Generator: Send + 'static {
    fn generate(&self, job: &PreparedJob) -> Result<GenerationOutput, GenerationError>;

    /// Runs several compatible jobs together (equal `batch_key`). The default runs them one
    /// by one; batching generators override it. Returns one result per job, in order.
    fn generate_batch(
        &self,
        jobs: &[PreparedJob],
    ) -> Vec<Result<GenerationOutput, GenerationError>> {
        jobs.iter().map(|job| self.generate(job)).collect()
    }

    /// [`Generator::generate_batch`] telling `observer` after every denoising step and stopping
    /// when it says so. The default reports nothing and never stops early; generators with a
    /// step loop override it.
    fn generate_batch_observed(
        &self,
        jobs: &[PreparedJob],
        observer: &dyn StepObserver,
    ) -> Vec<Result<GenerationOutput, GenerationError>> {
        let _ = observer;
        self.generate_batch(jobs)
    }

    /// How many images one UNet batch can hold; the worker groups jobs up to this.
    fn max_batch_images(&self) -> usize {
        1
    }

    /// What jobs this generator accepts; the prepare stage refuses the others.
    fn limits(&self) -> JobLimits {
        JobLimits::default()
    }

    /// The device and model set, asked once when the worker starts.
    fn info(&self) -> GeneratorInfo {
        GeneratorInfo::default()
    }

    /// The base models this generator can run and which are loaded now; asked by its device
    /// thread at start and after every batch (a batch may load one). Empty for generators
    /// with a single fixed model set.
    fn model_sets(&self) -> Vec<ModelSetState> {
        Vec::new()
    }

    /// Frees the base models loaded on demand (the default set stays), returning their ids;
    /// a later job naming one loads it again. Called by the device thread between batches.
    fn unload_model_sets(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("shape mismatch [1, 4] vs [1, 8]")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("unet failed")]
    struct Outer(#[source] Inner);

    #[test]
    fn cosine_similarity_is_insightfaces_compute_sim() {
        assert_eq!(cosine_similarity(&[1.0, 0.0], &[1.0, 0.0]), 1.0);
        assert_eq!(cosine_similarity(&[1.0, 0.0], &[0.0, 2.0]), 0.0);
        assert_eq!(cosine_similarity(&[3.0, 4.0], &[-3.0, -4.0]), -1.0);
        // Not normalised inputs are normalised, as compute_sim does.
        assert!((cosine_similarity(&[1.0, 1.0], &[2.0, 0.0]) - 0.70710677).abs() < 1e-7);
        assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn internal_errors_keep_their_cause_for_the_log() {
        let e = GenerationError::internal_from("the batch could not be rendered", Outer(Inner));
        assert_eq!(
            e.to_string(),
            "generation failed: the batch could not be rendered"
        );
        assert_eq!(
            error_chain(&e),
            "generation failed: the batch could not be rendered: unet failed: shape mismatch [1, 4] vs [1, 8]"
        );
        assert_eq!(e.clone(), e);
        assert_ne!(e, GenerationError::internal("other"));
    }
}
