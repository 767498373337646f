//! `POST .../image_editing/head_shot`: authenticate, normalise, get the face image, admit the
//! job, persist its record, then wait up to the sync wait for the result.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use headshot_core::queue::Admission;
use headshot_core::store::{JobId, JobRecord, JobStatus, JobStore, OutputFormat, StoreError};
use headshot_core::wire::{
    FetchRequest, HeadShotRequest, ProcessingResponse, ValidationErrors, WireResponse,
};
use headshot_core::GenerationJob;
use headshot_worker::SubmitError;

use super::body::{header_key, parse_object, refuse_wrong_header_key};
use crate::bodies::{failure_message, future_urls, success_body};
use crate::error::ApiError;
use crate::face_image::obtain_face_images;
use crate::finish::spawn_completion;
use crate::state::{AppState, SharedQueue};

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
        (status = 503, description = "Draining after SIGTERM (no new jobs), a worker node (`--role worker` takes no submits), or a shared store (Redis, the bucket) unavailable: retry shortly", body = headshot_core::wire::ErrorResponse),
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
    if !state.role.takes_submits() {
        return Err(ApiError::NotAnApiNode);
    }
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let mut request = HeadShotRequest::from_json_with_limits(
        &body,
        rand::random::<u32>(),
        &state.settings.text_limits,
    )
    .map_err(ApiError::Validation)?;
    state
        .settings
        .served
        .check(&mut request.model)
        .map_err(ApiError::Validation)?;
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
    if let Some(worker) = state.worker.as_ref().filter(|_| state.queue.is_none()) {
        if worker.in_flight() >= worker.max_queue_size() {
            return Err(ApiError::QueueFull {
                max_queued: worker.max_queue_size(),
                retry_after_secs: worker.retry_after().as_secs_f64().ceil().max(1.0) as u64,
            });
        }
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
    let admitted = match (&state.queue, &state.worker) {
        (Some(shared), _) => admit_shared(&state, shared, &record, job).await?,
        (None, Some(worker)) => admit_local(&state, worker, &record, job).await?,
        (None, None) => return Err(ApiError::Internal("no worker and no queue".into())),
    };
    tracing::info!(
        id,
        seed = request.seed,
        steps = request.num_inference_steps,
        "job admitted"
    );

    let (finished, eta) = match admitted {
        Admitted::Local { done, seq } => {
            let finished = tokio::time::timeout(state.settings.sync_wait, done)
                .await
                .ok()
                .and_then(Result::ok);
            let eta = state
                .worker
                .as_ref()
                .map(|w| w.eta_of(seq))
                .unwrap_or_default();
            (finished, eta)
        }
        Admitted::Shared { eta } => (wait_in_store(&state, id).await?, eta),
    };
    match finished {
        Some(finished) => match finished.status {
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
        None => Ok(ProcessingResponse::new(
            id,
            (eta.as_secs_f64() * 10.0).ceil() / 10.0,
            ctx.urls.fetch(id),
            future_urls(&record, &ctx.urls),
            meta,
        )
        .with_style(request.style.clone())
        .into()),
    }
}

/// Where an admitted job's answer will come from.
enum Admitted {
    /// This process's worker runs it; the receiver yields its final record.
    Local {
        done: tokio::sync::oneshot::Receiver<JobRecord>,
        seq: u64,
    },
    /// On the shared queue; its record in the shared store says when it is done.
    Shared { eta: Duration },
}

/// Admission by the local worker first, so a refused request leaves no record behind; then
/// the record with its inputs, so a crash from here on loses nothing (start-up runs it again).
async fn admit_local(
    state: &AppState,
    worker: &headshot_worker::WorkerHandle,
    record: &JobRecord,
    job: GenerationJob,
) -> Result<Admitted, ApiError> {
    let stored = job.clone();
    let ticket = worker.submit(job).map_err(|e| match e {
        SubmitError::QueueFull { max, retry_after } => ApiError::QueueFull {
            max_queued: max,
            retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
        },
        SubmitError::ShuttingDown => ApiError::ShuttingDown,
    })?;
    let seq = ticket.seq();
    store_blocking(state, record.clone(), move |jobs, record| {
        jobs.insert_with_input(&record, &stored)
    })
    .await?;
    let done = spawn_completion(&state.jobs, record.clone(), ticket);
    Ok(Admitted::Local { done, seq })
}

/// The record with its inputs first (a worker may claim the entry at once), then the entry;
/// a full shared queue turns the stored record `failed` with the rate-limit message.
async fn admit_shared(
    state: &AppState,
    shared: &SharedQueue,
    record: &JobRecord,
    job: GenerationJob,
) -> Result<Admitted, ApiError> {
    store_blocking(state, record.clone(), move |jobs, record| {
        jobs.insert_with_input(&record, &job)
    })
    .await?;
    let (queue, model_set, id) = (shared.queue.clone(), shared.model_set.clone(), record.id);
    let admission = tokio::task::spawn_blocking(move || queue.enqueue(&model_set, id))
        .await
        .map_err(|e| ApiError::Internal(format!("queueing the job panicked: {e}")));
    let refusal = match admission {
        Ok(Ok(Admission::Accepted { backlog })) => {
            let eta = state
                .settings
                .initial_job_estimate
                .mul_f64(backlog.max(1) as f64);
            return Ok(Admitted::Shared { eta });
        }
        Ok(Ok(Admission::Full { backlog, cap })) => ApiError::QueueFull {
            max_queued: cap as usize,
            retry_after_secs: state
                .settings
                .initial_job_estimate
                .mul_f64(backlog.max(1) as f64)
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64,
        },
        Ok(Err(e)) => ApiError::Store(e),
        Err(e) => e,
    };
    // Never queued: no worker will run it, so its record must not say `queued` forever.
    let mut refused = record.clone();
    refused.mark_failed(format!("The job was not queued: {refusal}."));
    if let Err(e) = store_blocking(state, refused, |jobs, r| jobs.update(&r)).await {
        tracing::warn!(id, error = %e, "could not mark a refused job failed");
    }
    Err(refusal)
}

/// Polls the shared record until it is finished or the sync wait is over.
async fn wait_in_store(state: &AppState, id: JobId) -> Result<Option<JobRecord>, ApiError> {
    let deadline = tokio::time::Instant::now() + state.settings.sync_wait;
    loop {
        let record = store_blocking(state, (), move |jobs, ()| jobs.get(id)).await?;
        if let Some(record) = record.filter(|r| r.status.is_finished()) {
            return Ok(Some(record));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(SHARED_POLL.min(deadline - now)).await;
    }
}

/// How often a submit waiting on a shared job reads its record.
const SHARED_POLL: Duration = Duration::from_millis(100);

async fn store_blocking<A: Send + 'static, T: Send + 'static>(
    state: &AppState,
    arg: A,
    f: impl FnOnce(&dyn JobStore, A) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let jobs = state.jobs.jobs.clone();
    tokio::task::spawn_blocking(move || f(jobs.as_ref(), arg))
        .await
        .map_err(|e| ApiError::Internal(format!("a job store call panicked: {e}")))?
        .map_err(ApiError::Store)
}
