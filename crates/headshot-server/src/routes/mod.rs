//! HTTP routes: every submit and fetch path of wire.md, cancel and clear_queue, output files,
//! health and metrics, and the playground page at `/`.

mod body;
mod cancel;
mod fetch;
mod health;
mod outputs;
mod playground;
mod submit;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::request_context;

use crate::state::AppState;
use crate::urls::OUTPUTS_PATH;

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

pub fn build_router(state: AppState) -> Router {
    let mut router = Router::new();
    for path in SUBMIT_PATHS {
        router = router.route(path, post(submit::head_shot));
    }
    for path in FETCH_ID_PATHS {
        router = router.route(
            path,
            post(fetch::fetch_by_path).get(fetch::fetch_by_path_get),
        );
    }
    for path in CANCEL_PATHS {
        router = router.route(path, post(cancel::cancel));
    }
    router
        .route(CLEAR_QUEUE_PATH, post(cancel::clear_queue))
        .route("/", get(playground::page))
        .route(
            FETCH_BODY_PATH,
            post(fetch::fetch_by_body).get(fetch::fetch_by_query),
        )
        .route(
            &format!("{OUTPUTS_PATH}/{{file}}"),
            get(outputs::serve_output),
        )
        .route("/health", get(health::health))
        .route("/health/ready", get(health::health))
        .route("/health/live", get(health::live))
        .route("/metrics", get(health::metrics))
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
