//! The finish stage: a job's life after the device answered. Store its images (PNG or
//! `.base64`), finish its record with its webhook queued in the outbox, and deliver that.

use std::io::Cursor;
use std::sync::Arc;

use headshot_core::store::{
    JobRecord, JobStore, OutputName, OutputStore, StoreError, WebhookDelivery,
};
use headshot_core::{error_chain, GenerationOutput, RgbImage};
use headshot_worker::{JobResult, JobTicket};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::generation_failure_message;
use crate::net::GuardedHttp;
use crate::urls::PublicUrls;
use crate::webhooks::{delivery_for, spawn_delivery, WebhookPolicy};

/// Stores the outcome of a finished job in its record (and the images in the output store),
/// with its webhook queued in the outbox. Returns the final record and that delivery; storage
/// failures turn the job into `failed`.
pub fn finish_job(
    mut record: JobRecord,
    result: JobResult,
    jobs: &dyn JobStore,
    outputs: &dyn OutputStore,
    urls: &PublicUrls,
) -> (JobRecord, Option<WebhookDelivery>) {
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
            tracing::warn!(id = record.id, error = %error_chain(&e), "generation failed");
            record.mark_failed(generation_failure_message(&e));
        }
    }
    let delivery = delivery_for(&record, urls);
    if let Err(e) = jobs.finish(&record, delivery.as_ref()) {
        tracing::error!(id = record.id, error = %e, "could not update the job record");
    }
    (record, delivery)
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

/// Shared handles for the background part of a job.
#[derive(Clone)]
pub struct JobContext {
    pub jobs: Arc<dyn JobStore>,
    pub outputs: Arc<dyn OutputStore>,
    pub http: GuardedHttp,
    pub urls: PublicUrls,
    pub webhook: WebhookPolicy,
    /// Jobs between the worker's answer and their stored record; the drain waits for them.
    pub finishing: TaskTracker,
    /// Webhook deliveries in progress; stopped (left pending in the outbox) after the drain.
    pub deliveries: TaskTracker,
    pub stop_deliveries: CancellationToken,
}

/// Finishes an admitted job in the background, whatever happens to the request that made it:
/// stores its outcome, then delivers its webhook. The receiver gets the final record.
pub fn spawn_completion(
    ctx: &JobContext,
    record: JobRecord,
    ticket: JobTicket,
) -> oneshot::Receiver<JobRecord> {
    let (done_tx, done_rx) = oneshot::channel();
    let ctx = ctx.clone();
    let id = record.id;
    ctx.finishing.clone().spawn(async move {
        let result = ticket.await;
        // Generation time and the outcome are counted once, by the worker
        // (headshot_job_duration_seconds, headshot_jobs_finished_total), not again here.
        let (jobs, outputs, urls) = (ctx.jobs.clone(), ctx.outputs.clone(), ctx.urls.clone());
        let fallback = record.clone();
        let finished = tokio::task::spawn_blocking(move || {
            finish_job(record, result, jobs.as_ref(), outputs.as_ref(), &urls)
        })
        .await;
        let (finished, delivery) = match finished {
            Ok(finished) => finished,
            Err(e) => {
                // Never leave a record "processing" forever.
                tracing::error!(id, error = %e, "finishing the job panicked");
                let mut record = fallback;
                record.mark_failed(
                    "The images could not be stored on the server. Please try again later.",
                );
                let delivery = delivery_for(&record, &ctx.urls);
                if let Err(e) = ctx.jobs.finish(&record, delivery.as_ref()) {
                    tracing::error!(id, error = %e, "could not mark the job failed");
                }
                (record, delivery)
            }
        };
        let _ = done_tx.send(finished);
        if let Some(delivery) = delivery {
            spawn_delivery(ctx, delivery);
        }
    });
    done_rx
}
