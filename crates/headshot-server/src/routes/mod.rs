//! HTTP routes: every submit and fetch path of wire.md, cancel, the SDK's enterprise admin
//! calls, output files, health, metrics, the OpenAPI document with its docs page, and the
//! playground page at `/`.

pub mod admin;
pub mod admin_answers;
mod body;
mod cancel;
mod fetch;
pub mod health;
pub mod openapi;
mod outputs;
mod playground;
pub mod schemas;
mod submit;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::request_context;

use crate::state::AppState;

pub use cancel::{CANCEL_PATHS, CLEAR_QUEUE_PATH};

/// Submit paths (all POST).
pub const SUBMIT_PATHS: [&str; 3] = [
    "/api/v6/image_editing/head_shot",
    "/api/v1/image_editing/head_shot",
    "/api/v1/enterprise/image_editing/head_shot",
];

/// Fetch paths with the id in the path (POST and GET).
pub const FETCH_ID_PATHS: [&str; 5] = [
    "/api/v6/image_editing/fetch/{id}",
    "/api/v1/image_editing/fetch/{id}",
    "/api/v1/enterprise/image_editing/fetch/{id}",
    "/api/v6/images/fetch/{id}",
    "/api/v3/fetch/{id}",
];

/// Fetch path with `request_id` in the body (POST) or query (GET).
pub const FETCH_BODY_PATH: &str = "/api/v6/images/fetch";

/// Every route, each documented one registered with its `#[utoipa::path]` (`routes!`), the
/// aliases of [`openapi::aliases`] as plain routes to the same handlers.
pub(crate) fn api_routes() -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(submit::head_shot))
        .routes(routes!(fetch::fetch_by_path, fetch::fetch_by_path_get))
        .routes(routes!(fetch::fetch_by_body, fetch::fetch_by_query))
        .routes(routes!(cancel::cancel))
        .routes(routes!(cancel::clear_queue))
        .routes(routes!(admin::system_details))
        .routes(routes!(admin::clear_cache))
        .routes(routes!(admin::restart_server))
        .routes(routes!(admin::update))
        .routes(routes!(outputs::serve_output))
        .routes(routes!(health::health))
        .routes(routes!(health::live))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs))
        .routes(routes!(playground::page));
    for path in &SUBMIT_PATHS[1..] {
        router = router.route(path, post(submit::head_shot));
    }
    for path in &FETCH_ID_PATHS[1..] {
        router = router.route(
            path,
            post(fetch::fetch_by_path).get(fetch::fetch_by_path_get),
        );
    }
    for path in &CANCEL_PATHS[1..] {
        router = router.route(path, post(cancel::cancel));
    }
    router.route("/health", get(health::health))
}

pub fn build_router(state: AppState) -> Router {
    let (router, _) = api_routes().split_for_parts();
    router
        .fallback(health::not_found)
        .layer(axum::middleware::from_fn(json_method_not_allowed))
        .layer(axum::middleware::from_fn_with_state(
            state.cors.clone(),
            request_context::cors,
        ))
        // Outermost, so every answer (CORS preflights and 405s included) carries the id.
        .layer(axum::middleware::from_fn(request_context::with_request_id))
        .with_state(state)
}

/// axum answers a known path with the wrong method with an empty 405; give it the error shape
/// (keeping the `Allow` header axum set).
async fn json_method_not_allowed(request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut answer = ApiError::MethodNotAllowed {
        method,
        allow: allow
            .as_ref()
            .and_then(|a| a.to_str().ok())
            .unwrap_or("POST")
            .to_string(),
    }
    .into_response();
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}
