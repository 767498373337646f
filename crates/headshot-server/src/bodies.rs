//! The wire bodies built from a job record: success, fetch and webhook answers.

use headshot_core::store::{JobRecord, JobStatus, StoreError};
use headshot_core::wire::{
    FailedResponse, FetchProcessingResponse, FetchSuccessResponse, Meta, SuccessResponse,
    WebhookFailed, WebhookSuccess, WireResponse,
};
use headshot_worker::Progress;
use serde_json::Value;

use crate::urls::PublicUrls;

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
    )
    .with_face_similarity(record.face_similarity.as_deref())
    .with_faces_found(record.faces_found)
    .with_seeds(record.seeds.clone())
    .with_style(record.style.clone()))
}

pub fn failure_message(record: &JobRecord) -> String {
    record
        .error
        .clone()
        .unwrap_or_else(|| "Image generation failed.".to_string())
}

/// What fetch answers for a record; `progress` is the worker's word on an unfinished one.
pub fn fetch_body(
    record: &JobRecord,
    urls: &PublicUrls,
    progress: Option<Progress>,
) -> WireResponse {
    match record.status {
        JobStatus::Queued | JobStatus::Processing => {
            let eta = |d: std::time::Duration| (d.as_secs_f64() * 10.0).ceil() / 10.0;
            match progress {
                Some(Progress::Waiting { position, eta: e }) => {
                    FetchProcessingResponse::waiting(record.id, position, eta(e))
                }
                Some(Progress::Running {
                    step,
                    total,
                    eta: e,
                }) => FetchProcessingResponse::running(record.id, step, total, eta(e)),
                None => FetchProcessingResponse::new(record.id),
            }
            .into()
        }
        JobStatus::Success => FetchSuccessResponse::new(record.id, output_urls(record, urls))
            .with_face_similarity(record.face_similarity.as_deref())
            .with_faces_found(record.faces_found)
            .with_seeds(record.seeds.clone())
            .into(),
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
