//! Every response body of the wire contract (shared/spec/wire.md), each with exactly the
//! documented keys. All are sent with HTTP 200 and a `status` field, as the hosted service does.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::request::ValidationErrors;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Status {
    Success,
    Processing,
    Error,
    Failed,
}

/// `meta` of submit responses: exactly the keys of the documented example, values as used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Meta {
    /// "yes" / "no"
    pub base64: String,
    pub face_image: String,
    pub file_prefix: String,
    pub guidance_scale: f64,
    pub height: u32,
    pub negative_prompt: String,
    pub num_inference_steps: u32,
    /// Always "out", as the hosted service reports.
    pub outdir: String,
    pub prompt: String,
    /// "yes" / "no"
    pub safety_checker: String,
    pub safety_checker_type: String,
    pub samples: u32,
    pub seed: u64,
    /// Always "yes": outputs are temporary.
    pub temp: String,
    pub width: u32,
}

/// A finished generation (submit answered within the wait, or a webhook body with `track_id`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuccessResponse {
    pub status: Status,
    /// Seconds the generation took.
    #[serde(rename = "generationTime")]
    pub generation_time: f64,
    pub id: u64,
    pub output: Vec<String>,
    pub proxy_links: Vec<String>,
    pub nsfw_content_detected: bool,
    pub meta: Meta,
    /// Our addition beside `output`: per image, the likeness of its face to the input face
    /// (cosine similarity of ArcFace embeddings, -1..=1), `null` where no face was found.
    /// Absent when the server does not score likeness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_similarity: Option<Vec<Option<f64>>>,
    /// Our addition: how many faces the input photo shows (`face_index` chose among them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faces_found: Option<u32>,
    /// Our addition, for best-of-N requests: each returned image's own seed, so that one can be
    /// regenerated alone (`seed` = it, `samples` 1, no `candidates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<u64>>,
    /// `style` exactly as the request sent it, when it sent one (`meta` keeps exactly the
    /// documented keys, so it is echoed here; it does not change the images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
}

/// Scores on the wire: six decimals, so every body (submit, fetch, webhook) writes the same
/// digits whichever way it is serialised (an f32 widened to f64 would print 17 digits).
fn wire_scores(scores: Option<&[Option<f32>]>) -> Option<Vec<Option<f64>>> {
    scores.map(|scores| {
        scores
            .iter()
            .map(|s| s.map(|s| (f64::from(s) * 1e6).round() / 1e6))
            .collect()
    })
}

impl SuccessResponse {
    pub fn new(
        id: u64,
        generation_time: f64,
        output: Vec<String>,
        nsfw_content_detected: bool,
        meta: Meta,
    ) -> Self {
        SuccessResponse {
            status: Status::Success,
            generation_time,
            id,
            proxy_links: output.clone(),
            output,
            nsfw_content_detected,
            meta,
            face_similarity: None,
            faces_found: None,
            seeds: None,
            style: None,
        }
    }

    pub fn with_face_similarity(mut self, scores: Option<&[Option<f32>]>) -> Self {
        self.face_similarity = wire_scores(scores);
        self
    }

    pub fn with_faces_found(mut self, faces_found: Option<u32>) -> Self {
        self.faces_found = faces_found;
        self
    }

    pub fn with_seeds(mut self, seeds: Option<Vec<u64>>) -> Self {
        self.seeds = seeds;
        self
    }

    /// With the request's `style` echoed (see [`SuccessResponse::style`]).
    pub fn with_style(mut self, style: Option<String>) -> Self {
        self.style = style;
        self
    }
}

pub const PROCESSING_MESSAGE: &str = "Try to fetch request after seconds estimated";

/// Submit answer when the work did not finish within the synchronous wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessingResponse {
    pub status: Status,
    pub tip: String,
    /// Estimated seconds until the images are ready.
    pub eta: f64,
    pub message: String,
    /// One of our fetch URLs for this id.
    pub fetch_result: String,
    pub id: u64,
    /// Always empty while processing.
    pub output: Vec<String>,
    /// The URLs the images will have once done.
    pub future_links: Vec<String>,
    /// Always empty while processing.
    pub proxy_links: Vec<String>,
    pub meta: Meta,
    /// `style` exactly as the request sent it, when it sent one (`meta` keeps exactly the
    /// documented keys, so it is echoed here; it does not change the images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
}

impl ProcessingResponse {
    pub fn new(
        id: u64,
        eta: f64,
        fetch_result: String,
        future_links: Vec<String>,
        meta: Meta,
    ) -> Self {
        ProcessingResponse {
            status: Status::Processing,
            tip: format!(
                "Your image is being generated in the background; POST {{\"key\": ...}} to {fetch_result} to get it, or wait for the webhook if you set one."
            ),
            eta,
            message: PROCESSING_MESSAGE.to_string(),
            fetch_result,
            id,
            output: Vec::new(),
            future_links,
            proxy_links: Vec::new(),
            meta,
            style: None,
        }
    }

    /// With the request's `style` echoed (see [`SuccessResponse::style`]).
    pub fn with_style(mut self, style: Option<String>) -> Self {
        self.style = style;
        self
    }
}

/// Fetch of a finished job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FetchSuccessResponse {
    pub status: Status,
    pub id: u64,
    pub output: Vec<String>,
    /// As in [`SuccessResponse::face_similarity`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_similarity: Option<Vec<Option<f64>>>,
    /// Our addition: how many faces the input photo shows (`face_index` chose among them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faces_found: Option<u32>,
    /// Our addition, for best-of-N requests: each returned image's own seed, so that one can be
    /// regenerated alone (`seed` = it, `samples` 1, no `candidates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<u64>>,
}

impl FetchSuccessResponse {
    pub fn new(id: u64, output: Vec<String>) -> Self {
        FetchSuccessResponse {
            status: Status::Success,
            id,
            output,
            face_similarity: None,
            faces_found: None,
            seeds: None,
        }
    }

    pub fn with_face_similarity(mut self, scores: Option<&[Option<f32>]>) -> Self {
        self.face_similarity = wire_scores(scores);
        self
    }

    pub fn with_faces_found(mut self, faces_found: Option<u32>) -> Self {
        self.faces_found = faces_found;
        self
    }

    pub fn with_seeds(mut self, seeds: Option<Vec<u64>>) -> Self {
        self.seeds = seeds;
        self
    }
}

pub const FETCH_PROCESSING_MESSAGE: &str = "try again later.";

/// Fetch of a job still queued or running. The documented keys, plus (an extension, absent
/// when unknown, e.g. for a job this server does not run right now) `queue_position` while it
/// waits, `progress` once it runs, and `eta` in seconds for either.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FetchProcessingResponse {
    pub status: Status,
    pub id: u64,
    pub message: String,
    /// An empty string (not a list), as the hosted service sends.
    pub output: String,
    /// Denoising steps done, while the job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<StepProgress>,
    /// How many jobs (0-based) will start before this one, while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    /// Estimated seconds until the job is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<f64>,
}

/// `progress` of a running job: `step` of `total` denoising steps are done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepProgress {
    pub step: usize,
    pub total: usize,
}

impl FetchProcessingResponse {
    pub fn new(id: u64) -> Self {
        FetchProcessingResponse {
            status: Status::Processing,
            id,
            message: FETCH_PROCESSING_MESSAGE.to_string(),
            output: String::new(),
            progress: None,
            queue_position: None,
            eta: None,
        }
    }

    /// Still waiting: `position` jobs start before it.
    pub fn waiting(id: u64, position: usize, eta_secs: f64) -> Self {
        FetchProcessingResponse {
            queue_position: Some(position),
            eta: Some(eta_secs),
            ..FetchProcessingResponse::new(id)
        }
    }

    /// Running: `step` of `total` denoising steps done.
    pub fn running(id: u64, step: usize, total: usize, eta_secs: f64) -> Self {
        FetchProcessingResponse {
            progress: Some(StepProgress { step, total }),
            eta: Some(eta_secs),
            ..FetchProcessingResponse::new(id)
        }
    }
}

pub const JOB_CANCELLED_MESSAGE: &str = "Job cancelled";

/// A cancel that took effect: the job will not run (or stopped), and its record is `failed`
/// with [`JOB_CANCELLED_MESSAGE`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelResponse {
    pub status: Status,
    pub id: u64,
    pub message: String,
}

impl CancelResponse {
    pub fn new(id: u64) -> Self {
        CancelResponse {
            status: Status::Success,
            id,
            message: JOB_CANCELLED_MESSAGE.to_string(),
        }
    }
}

/// `clear_queue`: how many waiting jobs were cancelled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClearQueueResponse {
    pub status: Status,
    pub message: String,
    pub cancelled: usize,
}

impl ClearQueueResponse {
    pub fn new(cancelled: usize) -> Self {
        ClearQueueResponse {
            status: Status::Success,
            message: "Queue cleared".to_string(),
            cancelled,
        }
    }
}

pub const NOT_FOUND_MESSAGE: &str = "Request not found";

/// Fetch of an id we do not know (never issued, or expired).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotFoundResponse {
    pub status: Status,
    /// An empty string.
    pub id: String,
    pub message: String,
    pub output: String,
}

impl NotFoundResponse {
    pub fn new() -> Self {
        NotFoundResponse {
            status: Status::Failed,
            id: String::new(),
            message: NOT_FOUND_MESSAGE.to_string(),
            output: String::new(),
        }
    }
}

impl Default for NotFoundResponse {
    fn default() -> Self {
        Self::new()
    }
}

/// A job that failed (no face, unreadable image, model failure): from submit or fetch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailedResponse {
    pub status: Status,
    pub id: u64,
    pub message: String,
    pub output: String,
}

impl FailedResponse {
    pub fn new(id: u64, message: impl Into<String>) -> Self {
        FailedResponse {
            status: Status::Failed,
            id,
            message: message.into(),
            output: String::new(),
        }
    }
}

pub const INVALID_KEY_MESSAGE: &str = "Invalid Api Key";
pub const INVALID_KEY_TIP: &str =
    "Send your API key as \"key\" in the JSON body (or in a \"key\" header); ask the server operator for one.";

/// A missing or wrong API key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvalidKeyResponse {
    pub status: Status,
    pub message: String,
    pub tip: String,
}

impl InvalidKeyResponse {
    pub fn new() -> Self {
        InvalidKeyResponse {
            status: Status::Error,
            message: INVALID_KEY_MESSAGE.to_string(),
            tip: INVALID_KEY_TIP.to_string(),
        }
    }
}

impl Default for InvalidKeyResponse {
    fn default() -> Self {
        Self::new()
    }
}

/// Request fields that are missing or unusable: `{"status":"error","message":{field:[msgs]}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationErrorResponse {
    pub status: Status,
    /// Field name -> messages, e.g. `{"prompt":["The prompt field is required."]}`.
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, Vec<String>>))]
    pub message: Value,
}

impl ValidationErrorResponse {
    pub fn new(errors: &ValidationErrors) -> Self {
        ValidationErrorResponse {
            status: Status::Error,
            message: errors.to_json(),
        }
    }
}

/// An error with a plain message (malformed JSON, internal errors before a job exists).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorResponse {
    pub status: Status,
    pub message: String,
}

impl ErrorResponse {
    pub fn new(message: impl Into<String>) -> Self {
        ErrorResponse {
            status: Status::Error,
            message: message.into(),
        }
    }
}

/// The queue is full.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateLimitResponse {
    pub status: Status,
    pub message: String,
    /// Seconds after which a retry is likely to be admitted.
    pub retry_after: u64,
}

impl RateLimitResponse {
    pub fn new(max_queued: usize, retry_after: u64) -> Self {
        RateLimitResponse {
            status: Status::Error,
            message: format!("Rate limit exceeded. Maximum {max_queued} queued requests allowed."),
            retry_after,
        }
    }
}

/// Webhook body for a finished job: the success body plus `track_id` exactly as sent
/// (`null` when the request had none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookSuccess {
    #[serde(flatten)]
    pub body: SuccessResponse,
    /// Exactly as the request sent it (`null` when it had none).
    pub track_id: Value,
}

/// Webhook body for a failed job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookFailed {
    pub status: Status,
    pub id: u64,
    pub message: String,
    /// Exactly as the request sent it (`null` when it had none).
    pub track_id: Value,
}

impl WebhookFailed {
    pub fn new(id: u64, message: impl Into<String>, track_id: Option<Value>) -> Self {
        WebhookFailed {
            status: Status::Failed,
            id,
            message: message.into(),
            track_id: track_id.unwrap_or(Value::Null),
        }
    }
}

/// Any body the server sends; serialises as the inner shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum WireResponse {
    Success(SuccessResponse),
    Processing(ProcessingResponse),
    FetchSuccess(FetchSuccessResponse),
    FetchProcessing(FetchProcessingResponse),
    NotFound(NotFoundResponse),
    Failed(FailedResponse),
    InvalidKey(InvalidKeyResponse),
    Validation(ValidationErrorResponse),
    Error(ErrorResponse),
    RateLimit(RateLimitResponse),
    Cancel(CancelResponse),
    ClearQueue(ClearQueueResponse),
}

impl WireResponse {
    pub fn to_json(&self) -> Value {
        // Serialising these plain structs cannot fail (no maps with non-string keys, no NaN
        // except via f64 fields, which serde_json writes as null).
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

macro_rules! into_wire {
    ($($ty:ident => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for WireResponse {
            fn from(r: $ty) -> Self { WireResponse::$variant(r) }
        })*
    };
}

into_wire!(
    SuccessResponse => Success,
    ProcessingResponse => Processing,
    FetchSuccessResponse => FetchSuccess,
    FetchProcessingResponse => FetchProcessing,
    NotFoundResponse => NotFound,
    FailedResponse => Failed,
    InvalidKeyResponse => InvalidKey,
    ValidationErrorResponse => Validation,
    ErrorResponse => Error,
    RateLimitResponse => RateLimit,
    CancelResponse => Cancel,
    ClearQueueResponse => ClearQueue,
);
