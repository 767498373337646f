//! The OpenAPI 3.1 document (`/api-doc/openapi.json`) and the docs page (`/docs`).
//!
//! Each handler carries its `#[utoipa::path]` for its first path; utoipa-axum registers the
//! route and its description together (`routes!`), so a documented route is a served one.
//! Alias paths (the other submit and fetch paths of wire.md, `/health`) reuse the first
//! path's description through [`ALIASES`]. To document a new route: annotate its handler with
//! `#[utoipa::path(...)]`, add `.routes(routes!(module::handler))` in `routes::api_routes`,
//! then regenerate openapi.json (`HEADSHOT_BLESS=1 cargo test -p headshot-server --test openapi`).
//!
//! The request body schema is written here, not derived from `HeadShotRequest`: the wire is
//! loose (numbers as strings, booleans as "yes"), and the normalised type is not what clients
//! send. Response schemas are derived from the core wire types (headshot-core's `openapi`
//! feature), so they cannot drift from what is serialised.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::{FETCH_ID_PATHS, SUBMIT_PATHS};

pub const OPENAPI_PATH: &str = "/api-doc/openapi.json";
pub const DOCS_PATH: &str = "/docs";

/// The HTTP API of headshot-server.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "headshot-server",
        description = "A ModelsLab-compatible head shot API (`POST /api/v6/image_editing/head_shot`): SD1.5 + IP-Adapter FaceID PlusV2. Every answer a client can cause is HTTP 200 with a `status` field (`success`, `processing`, `error`, `failed`), as the hosted service does. The API key travels as `key` in the JSON body, or in a `key` header, or as `Authorization: Bearer <key>`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&KeySchemes),
    // Not answers of a route: what the server POSTs to a request's `webhook` URL.
    components(schemas(
        headshot_core::wire::WebhookSuccess,
        headshot_core::wire::WebhookFailed
    )),
    tags(
        (name = "head_shot", description = "Submit a job and fetch its result"),
        (name = "outputs", description = "Generated images (temporary: deleted when they expire)"),
        (name = "enterprise", description = "The SDK's enterprise admin calls"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The three ways a key is accepted besides the body's `key`.
struct KeySchemes;

impl Modify for KeySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "key_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Paths answered exactly like another path (same handlers): (alias, documented path).
pub fn aliases() -> Vec<(&'static str, &'static str)> {
    let mut aliases: Vec<_> = SUBMIT_PATHS[1..]
        .iter()
        .map(|alias| (*alias, SUBMIT_PATHS[0]))
        .collect();
    aliases.extend(
        FETCH_ID_PATHS[1..]
            .iter()
            .map(|alias| (*alias, FETCH_ID_PATHS[0])),
    );
    aliases.push(("/health", super::health::READY_PATH));
    aliases
}

/// Gives each alias a copy of its documented path's item, with operation ids made unique
/// (OpenAPI requires them to be) from the alias path.
pub fn document_aliases(doc: &mut Document) {
    for (alias, documented) in aliases() {
        let Some(item) = doc.paths.paths.get(documented).cloned() else {
            continue;
        };
        doc.paths
            .paths
            .insert(alias.to_string(), renamed(item, alias));
    }
}

fn renamed(mut item: PathItem, alias: &str) -> PathItem {
    let suffix: String = alias
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
        let id = operation.operation_id.take().unwrap_or_default();
        operation.operation_id = Some(format!("{id}{suffix}"));
        let note = format!("Alias of the operation `{id}`.");
        operation.description = Some(match operation.description.take() {
            Some(d) => format!("{note} {d}"),
            None => note,
        });
    }
    item
}

/// The document as served (built once from the router's annotations).
pub fn document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, mut doc) = super::api_routes().split_for_parts();
        document_aliases(&mut doc);
        doc
    })
}

/// The committed form of the document: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(document()).unwrap_or_else(|e| {
        // Serialising plain data cannot fail; say so loudly if it ever does.
        json!({"error": format!("the OpenAPI document could not be serialised: {e}")}).to_string()
    });
    text.push('\n');
    text
}

/// This OpenAPI document
#[utoipa::path(
    get,
    path = "/api-doc/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn openapi_json() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        TEXT.get_or_init(document_json).as_str(),
    )
        .into_response()
}

/// The API docs page
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    responses((status = 200, description = "A page rendering /api-doc/openapi.json; it loads nothing from elsewhere (works offline)", content_type = "text/html"))
)]
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

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
    /// The face photo: an http(s) URL, a `data:image/...;base64,` URI, or raw base64.
    /// Required (here or as `image`).
    face_image: Option<String>,
    /// Alias of `face_image` (used when `face_image` is absent).
    image: Option<String>,
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
}

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
