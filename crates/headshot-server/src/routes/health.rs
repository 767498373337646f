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
    let (mut in_flight, mut max_queued, devices, devices_alive, preparing) = match &state.worker {
        Some(w) => (
            w.in_flight(),
            w.max_queue_size(),
            w.devices(),
            w.live_devices(),
            w.live_preparers() > 0,
        ),
        None => (0, state.settings.queue_cap, 0, 0, true),
    };
    // Beside a shared queue, jobs reach (or come from) Redis: unreachable means degraded. An
    // API node reports the shared backlog as its jobs in flight.
    let mut queue_reachable = true;
    if let Some(shared) = &state.queue {
        let queue = shared.queue.clone();
        match tokio::task::spawn_blocking(move || queue.backlog()).await {
            Ok(Ok(backlog)) if state.worker.is_none() => {
                in_flight = backlog as usize;
                max_queued = state.settings.queue_cap;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the shared queue is unreachable");
                queue_reachable = false;
            }
            Err(_) => queue_reachable = false,
        }
    }
    let (code, status) = if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if devices_alive < devices || !preparing || !queue_reachable {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        code,
        Json(Readiness {
            status,
            in_flight,
            max_queued,
            devices,
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
    let in_flight = state.worker.as_ref().map_or(0, |w| w.in_flight());
    metrics::gauge!("headshot_jobs_in_flight").set(in_flight as f64);
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
