//! Job control: `POST .../image_editing/cancel/{id}` stops one job, waiting or running, and
//! the SDK's enterprise `clear_queue` cancels every job the caller may see that is not running
//! yet. A cancelled job ends `failed` with "Job cancelled" (fetch and webhook say so); the
//! answer comes once that record is stored, so a fetch right after it sees the final state.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use headshot_core::store::JobRecord;
use headshot_core::wire::{
    parse_request_id, CancelResponse, ClearQueueResponse, WireResponse, JOB_CANCELLED_MESSAGE,
};
use headshot_worker::Cancelled;

use super::body::{header_key, read_small_body};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::live::LiveJob;
use crate::state::AppState;
use crate::webhooks::{delivery_for, spawn_delivery};

/// Cancel paths (POST), beside the fetch paths of the same prefixes.
pub const CANCEL_PATHS: [&str; 3] = [
    "/api/v6/image_editing/cancel/{id}",
    "/api/v1/image_editing/cancel/{id}",
    "/api/v1/enterprise/image_editing/cancel/{id}",
];

/// The SDK's `clear_queue` (POST `{"key"}`).
pub const CLEAR_QUEUE_PATH: &str = "/api/v1/enterprise/image_editing/clear_queue";

/// The longest a cancel waits for the job's final record (a job whose photo is being analysed
/// is answered when the analysis ends); a guard, normally it is there at once.
const FINAL_RECORD_WAIT: Duration = Duration::from_secs(30);

/// Cancel a job
///
/// A waiting job never runs; a running one stops at its next denoising step (its batch stops
/// once none of its jobs is left). The job ends `failed` with "Job cancelled".
#[utoipa::path(
    post,
    path = "/api/v6/image_editing/cancel/{id}",
    tag = "head_shot",
    request_body(content = inline(super::schemas::KeyBody), description = "The API key (or a `key` header)"),
    params(("id" = String, Path, description = "The job id from the submit answer")),
    responses(
        (status = 200, description = "`success` (cancelled), `Request not found` for an unknown, malformed or another key's id, an error if the job already finished, or `Invalid Api Key`", body = CancelResponse),
        (status = 400, description = "The body is not a JSON object", body = headshot_core::wire::ErrorResponse),
    ),
    security((), ("key_header" = []), ("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    metrics::counter!("headshot_cancel_requests_total").increment(1);
    match cancel_job(&state, &headers, body, &id).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Cancel every waiting job
///
/// The SDK's enterprise `clear_queue`: every job the caller may see that is not running yet.
#[utoipa::path(
    post,
    path = "/api/v1/enterprise/image_editing/clear_queue",
    tag = "enterprise",
    request_body(content = inline(super::schemas::KeyBody), description = "The API key (or a `key` header)"),
    responses(
        (status = 200, description = "How many jobs were cancelled; or `Invalid Api Key`", body = ClearQueueResponse),
        (status = 400, description = "The body is not a JSON object", body = headshot_core::wire::ErrorResponse),
    )
)]
pub async fn clear_queue(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match clear(&state, &headers, body).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn caller(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Caller, ApiError> {
    let request = read_small_body(state, headers, body).await?;
    let key = request.key.or_else(|| header_key(headers));
    state
        .keys
        .authenticate(key.as_deref())
        .ok_or(ApiError::InvalidKey)
}

async fn cancel_job(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    id: &str,
) -> Result<WireResponse, ApiError> {
    let caller = caller(state, headers, body).await?;
    let id = parse_request_id(id).ok_or(ApiError::NotFound)?;
    let jobs = state.jobs.jobs.clone();
    let record = tokio::task::spawn_blocking(move || jobs.get(id))
        .await
        .map_err(|e| ApiError::Internal(format!("job lookup panicked: {e}")))??
        // Another key's job answers exactly like a missing one.
        .filter(|r| caller.may_read(r.owner.as_deref()))
        .ok_or(ApiError::NotFound)?;
    if record.status.is_finished() {
        return Err(already_finished(&record));
    }
    let Some(live) = state.jobs.live.get(id) else {
        // Not run here. Beside a shared queue the record decides: once it is final, the worker
        // that claimed the job (or claims it later) stops it and drops its outcome.
        if state.queue.is_none() {
            return Err(ApiError::NotFound);
        }
        return cancel_shared(state, record).await;
    };
    let worker = state.worker.as_ref().ok_or(ApiError::NotFound)?;
    match worker.cancel(live.seq) {
        Cancelled::NotFound => {
            // The worker answered it a moment ago; its final record says how it ended.
            let finished = final_record(&live).await.unwrap_or(record);
            Err(already_finished(&finished))
        }
        outcome => {
            tracing::info!(id, ?outcome, "job cancelled on request");
            final_record(&live).await;
            Ok(CancelResponse::new(id).into())
        }
    }
}

/// Cancels a job of the shared queue that another node runs or will run: its record becomes
/// `failed` with "Job cancelled" (and its webhook is queued), which every worker respects.
async fn cancel_shared(state: &AppState, mut record: JobRecord) -> Result<WireResponse, ApiError> {
    let id = record.id;
    record.mark_failed(JOB_CANCELLED_MESSAGE);
    let delivery = delivery_for(&record, &state.jobs.urls);
    let (jobs, stored, webhook) = (state.jobs.jobs.clone(), record.clone(), delivery.clone());
    tokio::task::spawn_blocking(move || jobs.finish(&stored, webhook.as_ref()))
        .await
        .map_err(|e| ApiError::Internal(format!("cancelling the job panicked: {e}")))??;
    tracing::info!(id, "shared job cancelled on request");
    if let Some(delivery) = delivery {
        spawn_delivery(state.jobs.clone(), delivery);
    }
    Ok(CancelResponse::new(id).into())
}

async fn clear(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<WireResponse, ApiError> {
    let caller = caller(state, headers, body).await?;
    let cancelled: Vec<LiveJob> = state
        .jobs
        .live
        .all()
        .into_iter()
        .map(|(_, live)| live)
        .filter(|live| caller.may_read(live.owner.as_deref()))
        .filter(|live| {
            state
                .worker
                .as_ref()
                .is_some_and(|w| w.cancel_waiting(live.seq))
        })
        .collect();
    for live in &cancelled {
        final_record(live).await;
    }
    tracing::info!(cancelled = cancelled.len(), "queue cleared on request");
    Ok(ClearQueueResponse::new(cancelled.len()).into())
}

fn already_finished(record: &JobRecord) -> ApiError {
    ApiError::AlreadyFinished {
        id: record.id,
        status: record.status.as_str(),
    }
}

/// The job's final record once stored (`None` if that takes longer than the guard).
async fn final_record(live: &LiveJob) -> Option<JobRecord> {
    let mut done = live.done.clone();
    let stored = tokio::time::timeout(FINAL_RECORD_WAIT, done.wait_for(Option::is_some)).await;
    match stored {
        Ok(Ok(record)) => record.clone(),
        _ => None,
    }
}
