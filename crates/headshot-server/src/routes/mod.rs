//! HTTP routes: every submit and fetch path of wire.md, output files, health and metrics.

mod body;
mod fetch;
mod health;
mod outputs;
mod submit;

use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;
use crate::urls::OUTPUTS_PATH;

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
    router
        .route(
            FETCH_BODY_PATH,
            post(fetch::fetch_by_body).get(fetch::fetch_by_query),
        )
        .route(
            &format!("{OUTPUTS_PATH}/{{file}}"),
            get(outputs::serve_output),
        )
        .route("/health", get(health::health))
        .route("/metrics", get(health::metrics))
        .fallback(health::not_found)
        .with_state(state)
}
