//! `/health` (readiness, as before), `/health/live`, `/health/ready`, `/metrics` and the JSON
//! 404 for unknown paths.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use headshot_core::wire::ErrorResponse;
use serde::Serialize;

use crate::state::AppState;

/// The readiness answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok`, `draining` or `degraded`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
    /// Jobs admitted and not finished.
    in_flight: usize,
    max_queued: usize,
    /// Device threads started.
    devices: usize,
    /// Device threads still running.
    devices_alive: usize,
}

/// The liveness answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `alive`.
    #[schema(value_type = String, example = "alive")]
    status: &'static str,
}

pub const READY_PATH: &str = "/health/ready";

/// Readiness
///
/// 200 `ok` while jobs are taken; 503 `draining` after SIGTERM (no new jobs, fetch
/// works), 503 `degraded` when a device or every prepare thread has stopped (submits would
/// fail). Models are loaded before the server listens, so a listening server has them.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "`ok`: jobs are taken", body = Readiness),
        (status = 503, description = "`draining` (after SIGTERM) or `degraded` (a device or the prepare stage stopped)", body = Readiness),
    )
)]
pub async fn health(State(state): State<AppState>) -> Response {
    let worker = &state.worker;
    let devices_alive = worker.live_devices();
    let (code, status) = if worker.is_closed() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if devices_alive < worker.devices() || worker.live_preparers() == 0 {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        code,
        Json(Readiness {
            status,
            in_flight: worker.in_flight(),
            max_queued: worker.max_queue_size(),
            devices: worker.devices(),
            devices_alive,
        }),
    )
        .into_response()
}

/// Liveness
///
/// The process is up and serving HTTP, draining or not (restarting a draining
/// server would lose its drain).
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    responses((status = 200, description = "The process serves HTTP (draining or not)", body = Liveness))
)]
pub async fn live() -> Response {
    Json(Liveness { status: "alive" }).into_response()
}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format: counters, gauges, and histograms with buckets", content_type = "text/plain"))
)]
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
