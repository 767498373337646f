//! Wire types and normalisation of loose client input (see shared/spec/wire.md): what
//! ModelsLab clients send to `head_shot` and the fetch endpoints, and every body we answer.

pub mod limits;
pub mod loose;
pub mod model_choice;
pub mod request;
pub mod response;

pub use limits::TextLimits;
pub use model_choice::{is_model_name, MAX_LORAS, MAX_MODEL_NAME_CHARS};
pub use request::{
    is_http_url, lower_first, normalise_samples, normalise_size, parse_face_image,
    parse_request_id, snap_steps, FaceImageInput, FetchRequest, HeadShotRequest, ValidationErrors,
    MAX_CANDIDATES, MAX_FACE_IMAGES, MAX_STYLE_CHARS,
};
pub use response::{
    CancelResponse, ClearQueueResponse, ErrorResponse, FailedResponse, FetchProcessingResponse,
    FetchSuccessResponse, InvalidKeyResponse, Meta, NotFoundResponse, ProcessingResponse,
    RateLimitResponse, Status, StepProgress, SuccessResponse, ValidationErrorResponse,
    WebhookFailed, WebhookSuccess, WireResponse, JOB_CANCELLED_MESSAGE,
};
