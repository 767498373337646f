//! Schemas of what clients send (and the answer unions) for the OpenAPI document: written by
//! hand because the wire is loose (numbers as strings, booleans as "yes") and the normalised
//! `HeadShotRequest` is not what clients send. Documentation only; nothing is parsed with these.

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// An integer, or the same as a string (`512`, `"512"`); `null` or `""` mean "not set".
pub struct LooseInteger;

impl PartialSchema for LooseInteger {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "An integer, or an integer string (\"512\"); null or \"\" mean not set.",
            ))
            .item(ObjectBuilder::new().schema_type(Type::Integer))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^\s*-?[0-9]*\s*$")),
            )
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .into()
    }
}
impl ToSchema for LooseInteger {}

/// A number, or the same as a string (`7.5`, `"7.5"`); `null` or `""` mean "not set".
pub struct LooseNumber;

impl PartialSchema for LooseNumber {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "A number, or a numeric string (\"7.5\"); null or \"\" mean not set.",
            ))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .into()
    }
}
impl ToSchema for LooseNumber {}

/// `true`/`false`, `1`/`0`, or one of the strings clients send.
pub struct LooseBool;

impl PartialSchema for LooseBool {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "A boolean, 1/0, or \"true\"/\"false\"/\"yes\"/\"no\"/\"1\"/\"0\"/\"on\"/\"off\"/\"y\"/\"n\" (any case); null or \"\" mean not set.",
            ))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .enum_values(Some([0, 1])),
            )
            .item(ObjectBuilder::new().schema_type(Type::String).enum_values(Some([
                "true", "false", "yes", "no", "1", "0", "on", "off", "y", "n",
            ])))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .into()
    }
}
impl ToSchema for LooseBool {}

/// The head shot request as clients send it (shared/spec/wire.md). Unknown fields are ignored.
/// Out-of-range values are normalised, not refused; `meta` in the answer shows the values used.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(example = json!({
    "key": "your-api-key", "prompt": "pretty woman",
    "negative_prompt": "anime, cartoon, drawing, lowres, blurry",
    "face_image": "https://example.com/face.jpg", "width": "512", "height": "512",
    "samples": "1", "num_inference_steps": "21", "safety_checker": false, "base64": false,
    "seed": null, "guidance_scale": 7.5, "webhook": null, "track_id": null
}))]
pub struct HeadShotBody {
    /// The API key (or send it in a `key` header, or as `Authorization: Bearer`).
    key: Option<String>,
    /// What the image shows. Required.
    prompt: String,
    negative_prompt: Option<String>,
    /// The face photo: an http(s) URL, a `data:image/...;base64,` URI, or raw base64; or a
    /// list of up to 4 such photos of the same person (our addition). Required (here or as
    /// `image`).
    face_image: Option<FaceImages>,
    /// Alias of `face_image` (used when `face_image` is absent).
    image: Option<FaceImages>,
    /// Default 512; rounded to a multiple of 8; scaled down to fit 512x768 (either way).
    #[schema(required = false)]
    width: LooseInteger,
    /// Default 512; as `width`.
    #[schema(required = false)]
    height: LooseInteger,
    /// 21, 31 or 41; other values snap to the nearest (default 21).
    #[schema(required = false)]
    num_inference_steps: LooseInteger,
    /// Classifier-free guidance, clamped to [1, 20]; default 7.5.
    #[schema(required = false)]
    guidance_scale: LooseNumber,
    /// Weight of the face structure, clamped to [0, 2]; default 1.0.
    #[schema(required = false)]
    s_scale: LooseNumber,
    /// 1 or 2 (clamped); only 1 above 512x512 pixels.
    #[schema(required = false)]
    samples: LooseInteger,
    /// The seed; null, "" or a negative number mean random. The seed used is `meta.seed`.
    #[schema(required = false)]
    seed: LooseInteger,
    /// Run the NSFW check on each output (default true).
    #[schema(required = false)]
    safety_checker: LooseBool,
    /// What replaces a flagged image (default `blur`).
    safety_checker_type: Option<CensorName>,
    /// Alias of `safety_checker_type` when that is absent; other values of `type` are ignored.
    #[schema(rename = "type")]
    type_: Option<String>,
    /// Outputs as `.base64` files holding a `data:image/png;base64,...` string (default false).
    #[schema(required = false)]
    base64: LooseBool,
    /// http(s) URL that receives the success or failure body when the job ends.
    webhook: Option<String>,
    /// Echoed exactly as sent (any JSON value) in webhook bodies.
    track_id: Option<serde_json::Value>,
    /// Accepted for the official SDK (it sends "realistic" by default); the hosted API documents
    /// no effect, so it changes nothing here. Echoed as `style` beside `meta` when sent.
    style: Option<String>,
    /// Our addition: which face of the (first) photo gives the identity, by size: 0 (the
    /// largest, the default), 1, ...; an index the photo lacks fails the job.
    #[schema(required = false)]
    face_index: LooseInteger,
    /// Our addition (best-of-N): render this many images (at least `samples`, at most 16 and
    /// the model set's batch limit) and return the `samples` most like the input face, each
    /// with its seed in `seeds`.
    #[schema(required = false)]
    candidates: LooseInteger,
}

/// One photo (URL, data URI or base64), or a list of 1 to 4 photos of the same person.
pub struct FaceImages;

impl PartialSchema for FaceImages {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "A photo (http(s) URL, data URI or raw base64), or a list of 1 to 4 photos of the same person.",
            ))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(
                utoipa::openapi::schema::ArrayBuilder::new()
                    .items(ObjectBuilder::new().schema_type(Type::String))
                    .min_items(Some(1))
                    .max_items(Some(4)),
            )
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .into()
    }
}
impl ToSchema for FaceImages {}

/// The safety checker types.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum CensorName {
    Black,
    Blur,
    Pixelate,
    SensitiveContentText,
}

/// A body with only the key (fetch, admin calls); an empty body is accepted when the key
/// travels in a header.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct KeyBody {
    /// The API key (or a `key` header, or `Authorization: Bearer`).
    key: Option<String>,
}

/// `{"key", "request_id"}` for `/api/v6/images/fetch`.
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct FetchBody {
    key: Option<String>,
    /// The job id (`id` is accepted too); integer or integer string.
    #[schema(required = false)]
    request_id: LooseInteger,
}

/// Every body the submit routes answer with HTTP 200 (see `status`).
#[allow(dead_code)]
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
pub enum SubmitAnswer {
    Success(headshot_core::wire::SuccessResponse),
    Processing(headshot_core::wire::ProcessingResponse),
    Validation(headshot_core::wire::ValidationErrorResponse),
    InvalidKey(headshot_core::wire::InvalidKeyResponse),
    Failed(headshot_core::wire::FailedResponse),
    RateLimit(headshot_core::wire::RateLimitResponse),
}

/// Every body the fetch routes answer with HTTP 200 (see `status`).
#[allow(dead_code)]
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
pub enum FetchAnswer {
    Success(headshot_core::wire::FetchSuccessResponse),
    Processing(headshot_core::wire::FetchProcessingResponse),
    Failed(headshot_core::wire::FailedResponse),
    NotFound(headshot_core::wire::NotFoundResponse),
    InvalidKey(headshot_core::wire::InvalidKeyResponse),
}
