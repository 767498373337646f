//! `/health`, `/metrics` and the JSON 404 for unknown paths.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use headshot_core::wire::ErrorResponse;
use serde_json::json;

use crate::state::AppState;

/// Ready (200, `ok`) or draining after SIGTERM (503, `draining`: no new jobs, fetch works).
pub async fn health(State(state): State<AppState>) -> Response {
    let (code, status) = if state.worker.is_closed() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        code,
        Json(json!({
            "status": status,
            "in_flight": state.worker.in_flight(),
            "max_queued": state.worker.max_queue_size(),
            "devices": state.worker.devices(),
        })),
    )
        .into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    metrics::gauge!("headshot_jobs_in_flight").set(state.worker.in_flight() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(ErrorResponse::new(
            "Unknown endpoint. Submit to /api/v6/image_editing/head_shot.",
        )),
    )
        .into_response()
}
