//! The finish stage: a job's life after the device answered. Score each image's likeness to
//! the input face (keeping the best of best-of-N candidates), store the images (PNG or
//! `.base64`), finish the record with its webhook queued in the outbox, and deliver that. It runs on the blocking pool, beside the device
//! loop, which has moved on to the next batch.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use headshot_core::store::{
    JobRecord, JobStore, OutputName, OutputStore, StoreError, WebhookDelivery,
};
use headshot_core::{error_chain, GeneratedImage, GenerationError, LikenessScorer, RgbImage};
use headshot_worker::{JobResult, JobTicket};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::generation_failure_message;
use crate::likeness::score_and_pick;
use crate::live::{LiveJob, LiveJobs};
use crate::net::GuardedHttp;
use crate::urls::PublicUrls;
use crate::webhooks::{delivery_for, spawn_delivery, WebhookPolicy};

/// Stores the outcome of a finished job in its record (and the images in the output store),
/// with its webhook queued in the outbox. Returns the final record and that delivery; storage
/// failures turn the job into `failed`.
pub fn finish_job(
    mut record: JobRecord,
    result: JobResult,
    stores: &FinishStores<'_>,
) -> (JobRecord, Option<WebhookDelivery>) {
    let FinishStores {
        jobs,
        outputs,
        urls,
        likeness,
    } = *stores;
    match result.output {
        Ok(output) => {
            let picked = score_and_pick(
                record.id,
                output.images,
                result.image_seeds,
                result.identity.as_deref(),
                likeness,
                record.samples as usize,
            );
            match store_images(&record, &picked.images, outputs) {
                Ok(files) => {
                    record.face_similarity = picked.scores;
                    record.seeds = picked.seeds;
                    record.faces_found = result.faces_found.map(|n| n as u32);
                    record.mark_success(
                        files,
                        picked.images.iter().any(|i| i.nsfw),
                        result.generation_time,
                    )
                }
                Err(e) => {
                    tracing::error!(id = record.id, error = %e, "could not store generated images");
                    record.mark_failed("The images were generated but could not be stored on the server. Please try again later.");
                }
            }
        }
        Err(GenerationError::Cancelled) => {
            tracing::info!(id = record.id, "job cancelled");
            record.mark_failed(generation_failure_message(&GenerationError::Cancelled));
        }
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

/// What [`finish_job`] stores into, and the scorer of likeness (`None`: not scored).
#[derive(Clone, Copy)]
pub struct FinishStores<'a> {
    pub jobs: &'a dyn JobStore,
    pub outputs: &'a dyn OutputStore,
    pub urls: &'a PublicUrls,
    pub likeness: Option<&'a dyn LikenessScorer>,
}

fn store_images(
    record: &JobRecord,
    images: &[GeneratedImage],
    outputs: &dyn OutputStore,
) -> Result<Vec<String>, StoreError> {
    let mut files = Vec::with_capacity(images.len());
    for (index, generated) in images.iter().enumerate() {
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
    /// Scores each output's likeness to the input face (the face analyzer); `None`: no scores.
    pub likeness: Option<Arc<dyn LikenessScorer>>,
    /// Jobs between the worker's answer and their stored record; the drain waits for them.
    pub finishing: TaskTracker,
    /// Webhook deliveries in progress; stopped (left pending in the outbox) after the drain.
    pub deliveries: TaskTracker,
    pub stop_deliveries: CancellationToken,
    /// Jobs admitted and not finished, for progress and cancel.
    pub live: Arc<LiveJobs>,
}

/// A claimed job's flags, shared by its completion and its claim watcher (`pull.rs`).
#[derive(Debug, Default)]
pub struct ClaimState {
    /// Set by the watcher: drop the outcome (the claim was lost, or the record was finished
    /// elsewhere), and by the completion when it finds the record final.
    pub dropped: AtomicBool,
    /// Set by the completion once generation ended: the record's next write is its own, so
    /// the watcher no longer reads a final record as finished elsewhere.
    pub finishing: AtomicBool,
}

/// The shared record of job `id` is final already (cancelled through another node). A store
/// that cannot be read counts as not: the write that follows reports it.
fn finished_elsewhere(jobs: &dyn JobStore, id: u64) -> bool {
    matches!(jobs.get(id), Ok(Some(record)) if record.status.is_finished())
}

/// [`finished_elsewhere`] on the blocking pool.
pub(crate) async fn record_is_final(ctx: &JobContext, id: u64) -> bool {
    let jobs = ctx.jobs.clone();
    tokio::task::spawn_blocking(move || finished_elsewhere(jobs.as_ref(), id))
        .await
        .unwrap_or(false)
}

/// Finishes an admitted job in the background, whatever happens to the request that made it:
/// marks its record `processing` when a device starts it, stores its outcome, then delivers
/// its webhook. Until it is stored the job is in `ctx.live`. The receiver gets the final record.
pub fn spawn_completion(
    ctx: &JobContext,
    record: JobRecord,
    ticket: JobTicket,
) -> oneshot::Receiver<JobRecord> {
    spawn_completion_claimed(ctx, record, ticket, None)
}

/// [`spawn_completion`] for a job claimed from the shared queue: once `claim.dropped` is set
/// (another worker took the job over, or its record was finished elsewhere: cancelled), its
/// outcome is dropped, not stored, and the receiver gets no record. The shared record is read
/// before each write, so a record finished elsewhere is never overwritten.
pub fn spawn_completion_claimed(
    ctx: &JobContext,
    mut record: JobRecord,
    mut ticket: JobTicket,
    claim: Option<Arc<ClaimState>>,
) -> oneshot::Receiver<JobRecord> {
    let (done_tx, done_rx) = oneshot::channel();
    let (final_tx, final_rx) = watch::channel(None);
    let ctx = ctx.clone();
    let id = record.id;
    ctx.live.insert(
        id,
        LiveJob {
            seq: ticket.seq(),
            owner: record.owner.clone(),
            done: final_rx,
        },
    );
    ctx.finishing.clone().spawn(async move {
        if ticket.started().await {
            record.mark_processing();
            let (jobs, started) = (ctx.jobs.clone(), record.clone());
            let claimed = claim.clone();
            match tokio::task::spawn_blocking(move || {
                if claimed.is_some() && finished_elsewhere(jobs.as_ref(), id) {
                    return Ok(());
                }
                jobs.update(&started)
            })
            .await
            {
                Ok(Ok(())) => tracing::debug!(id, "job record processing"),
                Ok(Err(e)) => tracing::error!(id, error = %e, "could not mark the job processing"),
                Err(e) => tracing::error!(id, error = %e, "marking the job processing panicked"),
            }
        }
        let result = ticket.await;
        if let Some(claim) = &claim {
            claim.finishing.store(true, Ordering::SeqCst);
        }
        if claim
            .as_ref()
            .is_some_and(|claim| claim.dropped.load(Ordering::SeqCst))
        {
            tracing::info!(
                id,
                "the outcome is dropped: another worker took the job, or it was finished elsewhere"
            );
            ctx.live.remove(id);
            return;
        }
        // Generation time and the outcome are counted once, by the worker
        // (headshot_job_duration_seconds, headshot_jobs_finished_total), not again here.
        let stage = ctx.clone();
        let fallback = record.clone();
        if let Some(claim) = &claim {
            if record_is_final(&ctx, id).await {
                tracing::info!(
                    id,
                    "the job was finished elsewhere (cancelled); its outcome is dropped"
                );
                claim.dropped.store(true, Ordering::SeqCst);
                ctx.live.remove(id);
                return;
            }
        }
        let finished = tokio::task::spawn_blocking(move || {
            let stores = FinishStores {
                jobs: stage.jobs.as_ref(),
                outputs: stage.outputs.as_ref(),
                urls: &stage.urls,
                likeness: stage.likeness.as_deref(),
            };
            finish_job(record, result, &stores)
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
        final_tx.send_replace(Some(finished.clone()));
        ctx.live.remove(id);
        let _ = done_tx.send(finished);
        if let Some(delivery) = delivery {
            spawn_delivery(ctx, delivery);
        }
    });
    done_rx
}
