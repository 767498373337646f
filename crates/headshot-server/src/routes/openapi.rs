//! The OpenAPI 3.1 document (`/api-doc/openapi.json`) and the docs page (`/docs`).
//!
//! Each handler carries its `#[utoipa::path]` for its first path; utoipa-axum registers the
//! route and its description together (`routes!`), so a documented route is a served one.
//! Alias paths (the other submit and fetch paths of wire.md, `/health`) reuse the first
//! path's description through [`ALIASES`]. To document a new route: annotate its handler with
//! `#[utoipa::path(...)]`, add `.routes(routes!(module::handler))` in `routes::api_routes`,
//! then regenerate openapi.json (`HEADSHOT_BLESS=1 cargo test -p headshot-server --test openapi`).
//!
//! The request body schema is written by hand (schemas.rs), not derived from `HeadShotRequest`: the wire is
//! loose (numbers as strings, booleans as "yes"), and the normalised type is not what clients
//! send. Response schemas are derived from the core wire types (headshot-core's `openapi`
//! feature), so they cannot drift from what is serialised.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem};
use utoipa::{Modify, OpenApi};

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
    aliases.extend(
        super::CANCEL_PATHS[1..]
            .iter()
            .map(|alias| (*alias, super::CANCEL_PATHS[0])),
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
