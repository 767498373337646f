//! The one place where every error kind becomes a wire body and HTTP status. The hosted
//! service answers HTTP 200 with a `status` field for everything a client can cause; only a
//! body that is not JSON at all (400) and our own failures (500) use other codes, still with
//! the documented `{"status":"error","message":...}` shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use headshot_core::store::StoreError;
use headshot_core::wire::{
    ErrorResponse, FailedResponse, InvalidKeyResponse, NotFoundResponse, RateLimitResponse,
    ValidationErrorResponse, ValidationErrors, WireResponse, JOB_CANCELLED_MESSAGE,
};
use headshot_core::GenerationError;

use crate::face_image::FaceImageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body could not be read")]
    BodyRead {
        #[source]
        source: axum::Error,
    },
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout { secs: u64 },
    #[error("the request body is JSON {0}, not an object")]
    NotAnObject(&'static str),
    #[error("method {method} is not allowed here (allowed: {allow})")]
    MethodNotAllowed { method: String, allow: String },
    #[error("output file not found")]
    OutputNotFound,
    #[error("invalid API key")]
    InvalidKey,
    #[error("invalid request: {0}")]
    Validation(ValidationErrors),
    #[error(transparent)]
    FaceImage(#[from] FaceImageError),
    #[error("the queue is full ({max_queued} jobs)")]
    QueueFull {
        max_queued: usize,
        retry_after_secs: u64,
    },
    #[error("request not found")]
    NotFound,
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A submit sent to a `--role worker` node.
    #[error("this node only generates (--role worker)")]
    NotAnApiNode,
    /// Cancel of a job that already reached `success` or `failed` (cancelled included).
    #[error("job {id} has already finished ({status})")]
    AlreadyFinished { id: u64, status: &'static str },
    #[error("job {id} failed: {message}")]
    JobFailed { id: u64, message: String },
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status_and_body(&self) -> (StatusCode, WireResponse) {
        match self {
            ApiError::MalformedJson(detail) => (
                StatusCode::BAD_REQUEST,
                ErrorResponse::new(format!(
                    "The request body must be a JSON object ({detail})."
                ))
                .into(),
            ),
            // Nearly always a huge base64 face image; not a normal client condition, so 413.
            ApiError::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorResponse::new(format!(
                    "The request body may not be larger than {limit} bytes; send a smaller face image or a URL."
                ))
                .into(),
            ),
            // The client broke off (or sent broken chunking) mid-body; it rarely reads this.
            ApiError::BodyRead { .. } => (
                StatusCode::BAD_REQUEST,
                ErrorResponse::new("The request body could not be read to its end.").into(),
            ),
            ApiError::BodyTimeout { secs } => (
                StatusCode::REQUEST_TIMEOUT,
                ErrorResponse::new(format!(
                    "The request body was not received within {secs} seconds."
                ))
                .into(),
            ),
            ApiError::NotAnObject(kind) => (
                StatusCode::BAD_REQUEST,
                ErrorResponse::new(format!(
                    "The request body must be a JSON object with the request's fields, not {kind}."
                ))
                .into(),
            ),
            ApiError::MethodNotAllowed { method, allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorResponse::new(format!(
                    "This endpoint does not answer {method}; use {allow}."
                ))
                .into(),
            ),
            ApiError::OutputNotFound => (
                StatusCode::NOT_FOUND,
                ErrorResponse::new(
                    "No such output file; outputs are deleted when they expire.",
                )
                .into(),
            ),
            ApiError::InvalidKey => (StatusCode::OK, InvalidKeyResponse::new().into()),
            ApiError::Validation(errors) => {
                (StatusCode::OK, ValidationErrorResponse::new(errors).into())
            }
            ApiError::FaceImage(e) => (
                StatusCode::OK,
                ValidationErrorResponse::new(&ValidationErrors::single("face_image", e.to_string()))
                    .into(),
            ),
            ApiError::QueueFull { max_queued, retry_after_secs } => (
                StatusCode::OK,
                RateLimitResponse::new(*max_queued, *retry_after_secs).into(),
            ),
            ApiError::NotFound => (StatusCode::OK, NotFoundResponse::new().into()),
            // Not the client's doing and soon over: 503, so load balancers send it elsewhere.
            ApiError::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorResponse::new(
                    "The server is shutting down and accepts no new jobs; please retry shortly. Jobs already accepted can still be fetched.",
                )
                .into(),
            ),
            ApiError::NotAnApiNode => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorResponse::new(
                    "This node only generates images; send requests to an API node of the service.",
                )
                .into(),
            ),
            ApiError::AlreadyFinished { id, status } => (
                StatusCode::OK,
                ErrorResponse::new(format!(
                    "Request {id} has already finished ({status}) and cannot be cancelled."
                ))
                .into(),
            ),
            ApiError::JobFailed { id, message } => {
                (StatusCode::OK, FailedResponse::new(*id, message.clone()).into())
            }
            // A shared store (Redis, the bucket) that is down comes back by itself: 503. Which
            // one and where goes to the log only (`what` names internal hosts).
            ApiError::Store(StoreError::Remote { .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorResponse::new(
                    "The server's shared storage is unavailable right now; please retry in a few seconds.",
                )
                .into(),
            ),
            ApiError::Store(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorResponse::new(format!("The server could not store the request: {e}")).into(),
            ),
            ApiError::Internal(message) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorResponse::new(message.clone()).into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        metrics::counter!("headshot_request_errors_total", "kind" => self.kind()).increment(1);
        (status, Json(body)).into_response()
    }
}

impl ApiError {
    fn kind(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::BodyRead { .. } => "body_read",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::NotAnObject(_) => "not_an_object",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::OutputNotFound => "output_not_found",
            ApiError::InvalidKey => "invalid_key",
            ApiError::Validation(_) => "validation",
            ApiError::FaceImage(_) => "face_image",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::NotFound => "not_found",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::NotAnApiNode => "not_an_api_node",
            ApiError::AlreadyFinished { .. } => "already_finished",
            ApiError::JobFailed { .. } => "job_failed",
            ApiError::Store(_) => "store",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// The message a client sees when generation fails, by error kind.
pub fn generation_failure_message(e: &GenerationError) -> String {
    match e {
        GenerationError::NoFace => {
            "No face was detected in the face image. Send a clear, front-facing photo of one person.".to_string()
        }
        GenerationError::UnreadableImage(detail) => {
            format!("The face image could not be read: {detail}. Send a JPEG, PNG or WebP photo.")
        }
        GenerationError::InvalidInput(detail) => detail.clone(),
        // Fetch and the webhook then say `failed` with this message.
        GenerationError::Cancelled => JOB_CANCELLED_MESSAGE.to_string(),
        // Internal details (paths, tensor shapes) go to the log, not to the client.
        GenerationError::Internal { .. } => {
            "Image generation failed on the server. Please try again later.".to_string()
        }
    }
}
