//! The official SDK's enterprise admin calls under `/api/v1/enterprise/image_editing/`
//! (`system_details`, `clear_cache`, `restart_server`, `update`): POST `{"key"}`, the same key
//! checks as submit, answered with HTTP 200 (the SDK raises on any other status) in the
//! ModelsLab shape `{"status", "message", "data"}`.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use headshot_core::wire::{ErrorResponse, Status};

use super::admin_answers::*;
use super::body::{header_key, read_small_body};
use crate::error::ApiError;
use crate::state::{sweep_expired_now, AppState};
use crate::system::{uptime_text, MemoryFacts};

pub const ENTERPRISE_PREFIX: &str = "/api/v1/enterprise/image_editing";
pub const SYSTEM_DETAILS_PATH: &str = "/api/v1/enterprise/image_editing/system_details";
pub const CLEAR_CACHE_PATH: &str = "/api/v1/enterprise/image_editing/clear_cache";
pub const RESTART_SERVER_PATH: &str = "/api/v1/enterprise/image_editing/restart_server";
pub const UPDATE_PATH: &str = "/api/v1/enterprise/image_editing/update";

/// Devices, models, queue and memory of this server
#[utoipa::path(
    post,
    path = "/api/v1/enterprise/image_editing/system_details",
    tag = "enterprise",
    request_body(content = inline(super::schemas::KeyBody), description = "The API key (or a `key` header)"),
    responses(
        (status = 200, description = "Devices, models, queue and memory; or `Invalid Api Key`", body = SystemDetailsResponse),
    )
)]
pub async fn system_details(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = authorise(&state, &headers, body).await {
        return e.into_response();
    }
    let devices: Vec<DeviceDetails> = state
        .worker
        .iter()
        .flat_map(|w| w.device_status())
        .map(|d| DeviceDetails {
            device: d.info.device,
            kind: d.info.kind,
            models: d.info.models,
            model_sets: d.model_sets.into_iter().map(Into::into).collect(),
            alive: d.alive,
        })
        .collect();
    let mut models: Vec<String> = devices.iter().map(|d| d.models.clone()).collect();
    models.dedup();
    // This node's own worker; an API node has none and shows the shared backlog as queued.
    let (queued, running, max_queued) = match &state.worker {
        Some(w) => (
            w.queue_depth(),
            w.in_flight().saturating_sub(w.queue_depth()),
            w.max_queue_size(),
        ),
        None => {
            let backlog = match &state.queue {
                Some(shared) => {
                    let queue = shared.queue.clone();
                    tokio::task::spawn_blocking(move || queue.backlog())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or(0)
                }
                None => 0,
            };
            (backlog as usize, 0, state.settings.queue_cap)
        }
    };
    let uptime = state.started.elapsed().as_secs();
    let details = SystemDetails {
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: uptime,
        uptime: uptime_text(uptime),
        devices,
        models,
        model_ids: state.settings.served.ids(),
        queue: QueueDetails {
            queued,
            running,
            max_queued,
            draining: state.is_draining(),
        },
        memory: MemoryFacts::read(),
    };
    Json(SystemDetailsResponse {
        status: Status::Success,
        message: "System details".to_string(),
        data: details,
    })
    .into_response()
}

/// Remove expired outputs and job records now
#[utoipa::path(
    post,
    path = "/api/v1/enterprise/image_editing/clear_cache",
    tag = "enterprise",
    request_body(content = inline(super::schemas::KeyBody), description = "The API key (or a `key` header)"),
    responses(
        (status = 200, description = "What was removed (expired outputs and records); or `Invalid Api Key`", body = ClearCacheResponse),
        (status = 500, description = "The stores failed", body = ErrorResponse),
    )
)]
pub async fn clear_cache(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = authorise(&state, &headers, body).await {
        return e.into_response();
    }
    let swept = sweep_expired_now(
        state.jobs.jobs.clone(),
        state.jobs.outputs.clone(),
        state.settings.record_ttl,
    )
    .await;
    let summary = match swept {
        Ok(Ok(summary)) => summary,
        Ok(Err(e)) => return ApiError::Store(e).into_response(),
        Err(e) => {
            return ApiError::Internal(format!("the expiry sweep panicked: {e}")).into_response()
        }
    };
    let unloading = state
        .worker
        .as_ref()
        .map(|w| w.unload_model_sets())
        .unwrap_or_default();
    tracing::info!(
        ?summary,
        ?unloading,
        "clear_cache: expired outputs and records removed, on-demand model sets unloading"
    );
    let models = if unloading.is_empty() {
        "No model set loaded on demand is in memory; the default set stays loaded.".to_string()
    } else {
        format!(
            "Model sets loaded on demand are unloaded ({}; each device at once when idle, else after its batch); the default set stays loaded.",
            unloading.join(", ")
        )
    };
    Json(ClearCacheResponse {
        status: Status::Success,
        message: format!(
            "Removed {} expired output files and {} expired job records; outputs that have not expired are kept. {models}",
            summary.files_removed, summary.records_removed
        ),
        data: ClearedCache {
            records_removed: summary.records_removed,
            files_removed: summary.files_removed,
            bytes_removed: summary.bytes_removed,
            model_sets_unloaded: unloading,
        },
    })
    .into_response()
}

/// Not supported: restart with the process manager
#[utoipa::path(
    post,
    path = "/api/v1/enterprise/image_editing/restart_server",
    tag = "enterprise",
    request_body(content = inline(super::schemas::KeyBody), description = "The API key (or a `key` header)"),
    responses(
        (status = 200, description = "Always `{\"status\":\"error\"}`: not supported here", body = ErrorResponse),
    )
)]
pub async fn restart_server(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    not_supported(
        &state,
        &headers,
        body,
        "restart_server is not supported by this server: restart it with its process manager (systemctl restart, docker compose restart); SIGTERM drains admitted jobs first.",
    )
    .await
}

/// Not supported: deploy a new release instead
#[utoipa::path(
    post,
    path = "/api/v1/enterprise/image_editing/update",
    tag = "enterprise",
    request_body(content = inline(super::schemas::KeyBody), description = "The API key (or a `key` header)"),
    responses(
        (status = 200, description = "Always `{\"status\":\"error\"}`: not supported here", body = ErrorResponse),
    )
)]
pub async fn update(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    not_supported(
        &state,
        &headers,
        body,
        "update is not supported by this server: it never updates itself; deploy a new release (binary or image) and restart it.",
    )
    .await
}

/// HTTP 200 with the error shape: the SDK returns the body to its caller instead of raising.
async fn not_supported(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    message: &str,
) -> Response {
    if let Err(e) = authorise(state, headers, body).await {
        return e.into_response();
    }
    Json(ErrorResponse::new(message)).into_response()
}

/// The submit route's key checks: a wrong header key before the body is read, then the body's
/// `key` or else the header's.
async fn authorise(state: &AppState, headers: &HeaderMap, body: Body) -> Result<(), ApiError> {
    let request = read_small_body(state, headers, body).await?;
    let key = request.key.or_else(|| header_key(headers));
    state
        .keys
        .authenticate(key.as_deref())
        .map(|_| ())
        .ok_or(ApiError::InvalidKey)
}
