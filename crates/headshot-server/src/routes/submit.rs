//! `POST .../image_editing/head_shot`: authenticate, normalise, get the face image, admit the
//! job, persist its record, then wait up to the sync wait for the result.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use headshot_core::store::{JobRecord, JobStatus, OutputFormat};
use headshot_core::wire::{
    FetchRequest, HeadShotRequest, ProcessingResponse, ValidationErrors, WireResponse,
};
use headshot_worker::SubmitError;

use super::body::{header_key, parse_object, refuse_wrong_header_key};
use crate::bodies::{failure_message, future_urls, success_body};
use crate::error::ApiError;
use crate::face_image::obtain_face_images;
use crate::finish::spawn_completion;
use crate::state::AppState;

/// Submit a head shot job
#[utoipa::path(
    post,
    path = "/api/v6/image_editing/head_shot",
    tag = "head_shot",
    request_body(content = super::schemas::HeadShotBody, description = "The head shot request (loosely typed, as ModelsLab clients send it)"),
    responses(
        (status = 200, description = "`success` when done within the synchronous wait, else `processing` (fetch `fetch_result` later); `error` for a bad key, invalid fields or a full queue; `failed` when generation failed", body = super::schemas::SubmitAnswer),
        (status = 400, description = "The body is not a JSON object", body = headshot_core::wire::ErrorResponse),
        (status = 408, description = "The body did not arrive in time", body = headshot_core::wire::ErrorResponse),
        (status = 413, description = "The body is too large", body = headshot_core::wire::ErrorResponse),
        (status = 500, description = "The server could not store the job", body = headshot_core::wire::ErrorResponse),
        (status = 503, description = "Draining after SIGTERM: no new jobs", body = headshot_core::wire::ErrorResponse),
    ),
    security((), ("key_header" = []), ("bearer" = []))
)]
pub async fn head_shot(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    metrics::counter!("headshot_submit_requests_total").increment(1);
    match submit(state, headers, body).await {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn submit(state: AppState, headers: HeaderMap, body: Body) -> Result<WireResponse, ApiError> {
    let received = Instant::now();
    let body = refuse_wrong_header_key(&state.keys, &headers, body)?;
    let held = state
        .intake
        .read(&headers, body, state.settings.max_body_bytes)
        .await?;
    let body = parse_object(&held.bytes)?;
    let key = FetchRequest::from_json(&body)
        .key
        .or_else(|| header_key(&headers));
    let caller = state
        .keys
        .authenticate(key.as_deref())
        .ok_or(ApiError::InvalidKey)?;
    if state.worker.is_closed() {
        return Err(ApiError::ShuttingDown);
    }
    let request = HeadShotRequest::from_json_with_limits(
        &body,
        rand::random::<u32>(),
        &state.settings.text_limits,
    )
    .map_err(ApiError::Validation)?;
    crate::served_models::check_served(&request.model).map_err(ApiError::Validation)?;
    // The raw body's share of the intake budget ends here; the request holds what it needs.
    drop((body, held));
    if let Some(webhook) = &request.webhook {
        // Refuse a webhook we would never deliver now, rather than failing silently later.
        state.jobs.http.check_url(webhook).map_err(|e| {
            ApiError::Validation(ValidationErrors::single(
                "webhook",
                format!("The webhook cannot be used: {e}."),
            ))
        })?;
    }
    // Cheap early refusal under load, before downloading anything (admission below is exact).
    if state.worker.in_flight() >= state.worker.max_queue_size() {
        return Err(ApiError::QueueFull {
            max_queued: state.worker.max_queue_size(),
            retry_after_secs: state.worker.retry_after().as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    let (face_image, more_face_images) = obtain_face_images(
        &request.face_image,
        &request.more_face_images,
        &state.jobs.http,
        state.settings.face_image,
    )
    .await?;

    let ctx = state.jobs.clone();
    let jobs = ctx.jobs.clone();
    let id = tokio::task::spawn_blocking(move || jobs.next_id())
        .await
        .map_err(|e| ApiError::Internal(format!("job id allocation panicked: {e}")))??;
    let file_prefix = ctx.outputs.new_prefix();
    let meta = request.meta(&file_prefix);
    let format = if request.base64 {
        OutputFormat::Base64
    } else {
        OutputFormat::Png
    };
    let meta_json = serde_json::to_value(&meta).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut record = JobRecord::queued(id, meta_json, file_prefix, format, request.samples);
    record.webhook = request.webhook.clone();
    record.track_id = request.track_id.clone();
    record.owner = caller.owner();
    record.style = request.style.clone();

    let job = request.to_job(face_image, more_face_images);
    let stored = job.clone();
    // Admission first, so a refused request leaves no record behind.
    let ticket = state.worker.submit(job).map_err(|e| match e {
        SubmitError::QueueFull { max, retry_after } => ApiError::QueueFull {
            max_queued: max,
            retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
        },
        SubmitError::ShuttingDown => ApiError::ShuttingDown,
    })?;
    let seq = ticket.seq();
    {
        // With its inputs, so a crash from here on loses nothing: start-up runs it again.
        let jobs = ctx.jobs.clone();
        let record = record.clone();
        tokio::task::spawn_blocking(move || jobs.insert_with_input(&record, &stored))
            .await
            .map_err(|e| ApiError::Internal(format!("storing the job record panicked: {e}")))??;
    }
    tracing::info!(
        id,
        seed = request.seed,
        steps = request.num_inference_steps,
        "job admitted"
    );

    let done_rx = spawn_completion(&ctx, record.clone(), ticket);

    match tokio::time::timeout(state.settings.sync_wait, done_rx).await {
        Ok(Ok(finished)) => match finished.status {
            JobStatus::Success => {
                tracing::info!(
                    id,
                    total_s = received.elapsed().as_secs_f64(),
                    "job answered synchronously"
                );
                Ok(success_body(&finished, &ctx.urls)?.into())
            }
            _ => Err(ApiError::JobFailed {
                id,
                message: failure_message(&finished),
            }),
        },
        // Still running (or the background task died, which fetch will then report).
        _ => Ok(ProcessingResponse::new(
            id,
            (state.worker.eta_of(seq).as_secs_f64() * 10.0).ceil() / 10.0,
            ctx.urls.fetch(id),
            future_urls(&record, &ctx.urls),
            meta,
        )
        .with_style(request.style.clone())
        .into()),
    }
}
