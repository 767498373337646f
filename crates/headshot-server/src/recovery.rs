//! Start-up recovery. Every job a previous run accepted and did not finish runs again, oldest
//! first and before any new job (the job store's queue of record); one whose inputs are gone
//! fails with that reason, and its failure webhook goes out like any other. Webhooks the
//! previous run left pending are sent again.

use headshot_core::store::{JobRecord, JobStatus, StoreError, WebhookDelivery};
use headshot_worker::WorkerHandle;

use crate::finish::{spawn_completion, JobContext};
use crate::webhooks::{delivery_for, resume_outbox, spawn_delivery};

/// The message of a job that could not be resumed.
pub const INPUTS_LOST: &str =
    "The server restarted before this job finished and its inputs were not kept; please submit it again.";

/// What start-up recovery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub resumed: usize,
    pub failed: usize,
    pub webhooks: usize,
}

/// Resubmits `unfinished` (oldest first) to `worker` and resumes the outbox. Must run inside a
/// tokio runtime, before the server takes requests.
pub fn recover(
    ctx: &JobContext,
    worker: &WorkerHandle,
    unfinished: Vec<JobRecord>,
) -> Result<Recovered, StoreError> {
    let mut recovered = Recovered::default();
    let mut resumable = Vec::new();
    for record in unfinished {
        let job = match ctx.jobs.input(record.id) {
            Ok(Some(job)) => Ok(job),
            Ok(None) => Err("no inputs stored".to_string()),
            Err(e @ StoreError::Corrupt { .. }) => Err(e.to_string()),
            Err(e) => return Err(e),
        };
        match job {
            Ok(job) => resumable.push((record, job)),
            Err(why) => {
                tracing::warn!(id = record.id, why, "an unfinished job cannot be resumed");
                // Its failure webhook is now in the outbox, resumed below.
                fail(ctx, record)?;
                recovered.failed += 1;
            }
        }
    }
    recovered.webhooks = resume_outbox(ctx)?;
    for (mut record, job) in resumable {
        if record.status == JobStatus::Processing {
            // It was running when the previous run stopped; it waits again until a device
            // starts it anew (then the completion marks it processing again).
            record.status = JobStatus::Queued;
            ctx.jobs.update(&record)?;
        }
        match worker.submit(job) {
            Ok(ticket) => {
                tracing::info!(id = record.id, "resuming a job the previous run accepted");
                // Nobody waits for the result here; fetch and the webhook deliver it.
                drop(spawn_completion(ctx, record, ticket));
                recovered.resumed += 1;
            }
            Err(e) => {
                tracing::error!(id = record.id, error = %e, "could not resubmit a resumed job");
                if let Some(delivery) = fail(ctx, record)? {
                    spawn_delivery(ctx.clone(), delivery);
                }
                recovered.failed += 1;
            }
        }
    }
    Ok(recovered)
}

/// Marks `record` failed with its failure webhook queued in the outbox; returns that delivery.
fn fail(ctx: &JobContext, mut record: JobRecord) -> Result<Option<WebhookDelivery>, StoreError> {
    record.mark_failed(INPUTS_LOST);
    let delivery = delivery_for(&record, &ctx.urls);
    ctx.jobs.finish(&record, delivery.as_ref())?;
    Ok(delivery)
}
