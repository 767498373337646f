//! A job's life after admission: store its images (PNG or `.base64`), update its record,
//! and deliver its webhook. Also the bodies built from a record (success, fetch, webhook).

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use headshot_core::store::{JobRecord, JobStatus, JobStore, OutputName, OutputStore, StoreError};
use headshot_core::wire::{
    FailedResponse, FetchProcessingResponse, FetchSuccessResponse, Meta, SuccessResponse,
    WebhookFailed, WebhookSuccess, WireResponse,
};
use headshot_core::{GenerationOutput, RgbImage};
use headshot_worker::JobResult;
use serde_json::Value;

use crate::error::generation_failure_message;
use crate::net::{FetchError, GuardedHttp};
use crate::urls::PublicUrls;

/// Webhook delivery settings.
#[derive(Clone, Copy, Debug)]
pub struct WebhookPolicy {
    pub retries: usize,
    pub first_backoff: Duration,
    pub timeout: Duration,
}

/// Stores the outcome of a finished job in its record (and the images in the output store).
/// Returns the final record; storage failures turn the job into `failed`.
pub fn finish_job(
    mut record: JobRecord,
    result: JobResult,
    jobs: &dyn JobStore,
    outputs: &dyn OutputStore,
) -> JobRecord {
    match result.output {
        Ok(output) => match store_images(&record, &output, outputs) {
            Ok(files) => record.mark_success(
                files,
                output.nsfw_content_detected(),
                result.generation_time,
            ),
            Err(e) => {
                tracing::error!(id = record.id, error = %e, "could not store generated images");
                record.mark_failed("The images were generated but could not be stored on the server. Please try again later.");
            }
        },
        Err(e) => {
            tracing::warn!(id = record.id, error = %e, "generation failed");
            record.mark_failed(generation_failure_message(&e));
        }
    }
    if let Err(e) = jobs.update(&record) {
        tracing::error!(id = record.id, error = %e, "could not update the job record");
    }
    record
}

fn store_images(
    record: &JobRecord,
    output: &GenerationOutput,
    outputs: &dyn OutputStore,
) -> Result<Vec<String>, StoreError> {
    let mut files = Vec::with_capacity(output.images.len());
    for (index, generated) in output.images.iter().enumerate() {
        let name = OutputName::new(&record.file_prefix, index, record.output_format)?;
        let png = encode_png(&generated.image).map_err(|message| StoreError::Io {
            path: name.to_string(),
            source: std::io::Error::other(message),
        })?;
        let contents = headshot_store::encode_output(record.output_format, &png);
        outputs.put(&name, &contents)?;
        files.push(name.to_string());
    }
    Ok(files)
}

/// PNG bytes of an RGB image.
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>, String> {
    let buffer = image::RgbImage::from_raw(image.width, image.height, image.pixels.clone())
        .ok_or_else(|| {
            format!(
                "the generator returned {} bytes for a {}x{} RGB image",
                image.pixels.len(),
                image.width,
                image.height
            )
        })?;
    let mut png = Vec::new();
    buffer
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("PNG encoding failed: {e}"))?;
    Ok(png)
}

/// The record's `meta` as the wire type.
pub fn record_meta(record: &JobRecord) -> Result<Meta, StoreError> {
    serde_json::from_value(record.meta.clone()).map_err(|e| StoreError::Corrupt {
        id: record.id,
        message: format!("meta: {e}"),
    })
}

pub fn output_urls(record: &JobRecord, urls: &PublicUrls) -> Vec<String> {
    record.output_files.iter().map(|f| urls.output(f)).collect()
}

pub fn future_urls(record: &JobRecord, urls: &PublicUrls) -> Vec<String> {
    record
        .planned_output_names()
        .iter()
        .map(|n| urls.output(&n.to_string()))
        .collect()
}

/// The submit-style success body of a finished record.
pub fn success_body(record: &JobRecord, urls: &PublicUrls) -> Result<SuccessResponse, StoreError> {
    Ok(SuccessResponse::new(
        record.id,
        record.generation_time_s.unwrap_or(0.0),
        output_urls(record, urls),
        record.nsfw_content_detected,
        record_meta(record)?,
    ))
}

pub fn failure_message(record: &JobRecord) -> String {
    record
        .error
        .clone()
        .unwrap_or_else(|| "Image generation failed.".to_string())
}

/// What fetch answers for a record.
pub fn fetch_body(record: &JobRecord, urls: &PublicUrls) -> WireResponse {
    match record.status {
        JobStatus::Queued | JobStatus::Processing => FetchProcessingResponse::new(record.id).into(),
        JobStatus::Success => {
            FetchSuccessResponse::new(record.id, output_urls(record, urls)).into()
        }
        JobStatus::Failed => FailedResponse::new(record.id, failure_message(record)).into(),
    }
}

/// The webhook body for a finished record, `None` if it has no webhook or is not finished.
pub fn webhook_body(record: &JobRecord, urls: &PublicUrls) -> Option<Value> {
    record.webhook.as_ref()?;
    let track_id = record.track_id.clone().unwrap_or(Value::Null);
    let body = match record.status {
        JobStatus::Success => match success_body(record, urls) {
            Ok(body) => serde_json::to_value(WebhookSuccess { body, track_id }),
            Err(e) => {
                tracing::error!(id = record.id, error = %e, "cannot build the webhook body");
                return None;
            }
        },
        JobStatus::Failed => serde_json::to_value(WebhookFailed::new(
            record.id,
            failure_message(record),
            Some(track_id),
        )),
        JobStatus::Queued | JobStatus::Processing => return None,
    };
    body.ok()
}

/// POSTs the record's webhook, retrying with exponential back-off on network errors and
/// non-2xx answers. Refused URLs (SSRF policy) are not retried.
pub async fn deliver_webhook(
    record: &JobRecord,
    urls: &PublicUrls,
    http: &GuardedHttp,
    policy: WebhookPolicy,
) -> Result<(), FetchError> {
    let (Some(url), Some(body)) = (record.webhook.as_deref(), webhook_body(record, urls)) else {
        return Ok(());
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.first_backoff)
        .with_max_delay(policy.first_backoff.saturating_mul(32))
        .with_max_times(policy.retries)
        .with_jitter();
    let attempt = || async { http.post_json(url, &body, policy.timeout).await };
    let result = attempt
        .retry(backoff)
        .when(|e| !matches!(e, FetchError::Blocked { .. } | FetchError::InvalidUrl(_)))
        .notify(|e, delay| {
            tracing::warn!(id = record.id, error = %e, retry_in = ?delay, "webhook delivery failed; retrying");
        })
        .await;
    match &result {
        Ok(_) => {
            metrics::counter!("headshot_webhooks_total", "outcome" => "delivered").increment(1);
            tracing::info!(id = record.id, "webhook delivered");
        }
        Err(e) => {
            metrics::counter!("headshot_webhooks_total", "outcome" => "failed").increment(1);
            tracing::error!(id = record.id, error = %e, "webhook delivery gave up");
        }
    }
    result.map(|_| ())
}

/// Marks records left queued/processing by a previous run as failed: their work is gone.
pub fn fail_interrupted_jobs(jobs: &dyn JobStore) -> Result<usize, StoreError> {
    let unfinished = jobs.list_unfinished()?;
    for mut record in unfinished.iter().cloned() {
        record
            .mark_failed("The server restarted before this job finished; please submit it again.");
        jobs.update(&record)?;
    }
    Ok(unfinished.len())
}

/// Shared handles for the background part of a job.
#[derive(Clone)]
pub struct JobContext {
    pub jobs: Arc<dyn JobStore>,
    pub outputs: Arc<dyn OutputStore>,
    pub http: GuardedHttp,
    pub urls: PublicUrls,
    pub webhook: WebhookPolicy,
}
