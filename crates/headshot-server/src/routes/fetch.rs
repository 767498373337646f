//! Fetch endpoints: the id in the path (POST or GET) or `request_id` in the body/query.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use headshot_core::store::JobId;
use headshot_core::wire::{parse_request_id, FetchRequest};
use headshot_core::Progress;

use super::body::{header_key, query_object, read_small_body};
use crate::bodies::fetch_body;
use crate::error::ApiError;
use crate::state::AppState;

/// Fetch a job by id
#[utoipa::path(
    post,
    path = "/api/v6/image_editing/fetch/{id}",
    request_body(content = super::schemas::KeyBody, description = "`{\"key\": ...}` (or an empty body with a `key` header)"),
    tag = "head_shot",
    params(("id" = String, Path, description = "The job id from the submit answer")),
    responses(
        (status = 200, description = "`success` with the output URLs, `processing`, `failed`, or `Request not found` for an unknown (or another key's) id", body = super::schemas::FetchAnswer),
        (status = 400, description = "The body is not a JSON object", body = headshot_core::wire::ErrorResponse),
    ),
    security((), ("key_header" = []), ("bearer" = []))
)]
pub async fn fetch_by_path(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = match read_small_body(&state, &headers, body).await {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    answer(
        &state,
        request.key.or_else(|| header_key(&headers)),
        parse_request_id(&id),
    )
    .await
}

/// Fetch a job by id (GET)
#[utoipa::path(
    get,
    path = "/api/v6/image_editing/fetch/{id}",
    params(("key" = Option<String>, Query, description = "The API key (or a `key` header)")),
    tag = "head_shot",
    params(("id" = String, Path, description = "The job id from the submit answer")),
    responses(
        (status = 200, description = "`success` with the output URLs, `processing`, `failed`, or `Request not found` for an unknown (or another key's) id", body = super::schemas::FetchAnswer),
        (status = 400, description = "The body is not a JSON object", body = headshot_core::wire::ErrorResponse),
    ),
    security((), ("key_header" = []), ("bearer" = []))
)]
pub async fn fetch_by_path_get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let request = FetchRequest::from_json(&query_object(query));
    answer(
        &state,
        request.key.or_else(|| header_key(&headers)),
        parse_request_id(&id),
    )
    .await
}

/// Fetch a job by `request_id` in the body
#[utoipa::path(
    post,
    path = "/api/v6/images/fetch",
    request_body(content = super::schemas::FetchBody, description = "`{\"key\", \"request_id\"}`"),
    tag = "head_shot",
    responses(
        (status = 200, description = "`success` with the output URLs, `processing`, `failed`, or `Request not found` for an unknown (or another key's) id", body = super::schemas::FetchAnswer),
        (status = 400, description = "The body is not a JSON object", body = headshot_core::wire::ErrorResponse),
    ),
    security((), ("key_header" = []), ("bearer" = []))
)]
pub async fn fetch_by_body(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request = match read_small_body(&state, &headers, body).await {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    answer(
        &state,
        request.key.or_else(|| header_key(&headers)),
        request.request_id,
    )
    .await
}

/// Fetch a job by `request_id` in the query
#[utoipa::path(
    get,
    path = "/api/v6/images/fetch",
    params(
        ("key" = Option<String>, Query, description = "The API key (or a `key` header)"),
        ("request_id" = Option<String>, Query, description = "The job id"),
    ),
    tag = "head_shot",
    responses(
        (status = 200, description = "`success` with the output URLs, `processing`, `failed`, or `Request not found` for an unknown (or another key's) id", body = super::schemas::FetchAnswer),
        (status = 400, description = "The body is not a JSON object", body = headshot_core::wire::ErrorResponse),
    ),
    security((), ("key_header" = []), ("bearer" = []))
)]
pub async fn fetch_by_query(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let request = FetchRequest::from_json(&query_object(query));
    answer(
        &state,
        request.key.or_else(|| header_key(&headers)),
        request.request_id,
    )
    .await
}

async fn answer(state: &AppState, key: Option<String>, id: Option<u64>) -> Response {
    metrics::counter!("headshot_fetch_requests_total").increment(1);
    let Some(caller) = state.keys.authenticate(key.as_deref()) else {
        return ApiError::InvalidKey.into_response();
    };
    let Some(id) = id else {
        return ApiError::NotFound.into_response();
    };
    let jobs = state.jobs.jobs.clone();
    let record = match tokio::task::spawn_blocking(move || jobs.get(id)).await {
        Ok(Ok(record)) => record,
        Ok(Err(e)) => return ApiError::Store(e).into_response(),
        Err(e) => return ApiError::Internal(format!("job lookup panicked: {e}")).into_response(),
    };
    match record {
        // Another key's job answers exactly like a missing one.
        Some(record) if caller.may_read(record.owner.as_deref()) => {
            let progress = if record.status.is_finished() {
                None
            } else {
                progress(state, id).await
            };
            Json(fetch_body(&record, &state.jobs.urls, progress)).into_response()
        }
        _ => ApiError::NotFound.into_response(),
    }
}

/// Where an unfinished job is: this node's worker says so for a job it runs; past one
/// machine, the report of the worker that claimed it. `None` (plain `processing`) while it
/// waits in the shared queue, or when Redis does not answer: fetch still answers.
async fn progress(state: &AppState, id: JobId) -> Option<Progress> {
    let local = state
        .jobs
        .live
        .get(id)
        .and_then(|live| state.worker.as_ref()?.progress(live.seq));
    if local.is_some() {
        return local;
    }
    let queue = state.queue.as_ref()?.queue.clone();
    match tokio::task::spawn_blocking(move || queue.reported_progress(id)).await {
        Ok(Ok(reported)) => reported,
        Ok(Err(e)) => {
            tracing::debug!(id, error = %e, "could not read a job's reported progress");
            None
        }
        Err(e) => {
            tracing::error!(id, error = %e, "reading a job's reported progress panicked");
            None
        }
    }
}
