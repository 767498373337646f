//! The worker side of the shared queue: claim jobs while the local worker has room, run each
//! like a locally admitted one (the same completion: processing mark, finish stage, webhook),
//! keep its claim alive while it runs, and acknowledge it only once its final record is
//! stored. A job whose worker died is claimed again by another after the claim timeout; one
//! already finished is acknowledged without running; one delivered too often fails.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use headshot_core::queue::{Delivery, JobQueue};
use headshot_core::store::{JobId, JobRecord, StoreError};
use headshot_worker::WorkerHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::finish::{record_is_final, spawn_completion_claimed, ClaimState, JobContext};
use crate::recovery::INPUTS_LOST;
use crate::webhooks::{delivery_for, spawn_delivery};

/// How long one claim call waits for a new entry: short, so a drain is noticed quickly.
const CLAIM_WAIT: Duration = Duration::from_millis(500);
/// Pause after the queue failed (Redis down), before asking again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Pause while the local worker is full.
const FULL_PAUSE: Duration = Duration::from_millis(50);

/// Starts the pull loop on `tracker`, claiming at most one job per device plus `prefetch`
/// ahead; it stops claiming once `stop` is cancelled (the jobs it
/// claimed still finish: the drain waits for the worker).
pub fn spawn_pull_loop(
    tracker: &TaskTracker,
    ctx: JobContext,
    worker: WorkerHandle,
    queue: Arc<dyn JobQueue>,
    prefetch: usize,
    stop: CancellationToken,
) {
    let runs = tracker.clone();
    // Claimed and not finished here at most: one running per device, `prefetch` waiting.
    let most = (worker.devices() + prefetch)
        .min(worker.max_queue_size())
        .max(1);
    tracker.spawn(async move {
        tracing::info!("pulling jobs from the shared queue");
        while !stop.is_cancelled() {
            let room = most.saturating_sub(worker.in_flight());
            if room == 0 {
                pause(&stop, FULL_PAUSE).await;
                continue;
            }
            let claimer = queue.clone();
            let claimed =
                tokio::task::spawn_blocking(move || claimer.claim(room, CLAIM_WAIT)).await;
            match claimed {
                Ok(Ok(deliveries)) => {
                    for delivery in deliveries {
                        let (ctx, worker, queue) = (ctx.clone(), worker.clone(), queue.clone());
                        runs.spawn(run_delivery(ctx, worker, queue, delivery));
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not claim jobs from the shared queue; retrying");
                    pause(&stop, RETRY_PAUSE).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming jobs panicked; retrying");
                    pause(&stop, RETRY_PAUSE).await;
                }
            }
        }
        tracing::info!("stopped pulling jobs from the shared queue");
    });
}

async fn pause(stop: &CancellationToken, how_long: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(how_long) => {}
    }
}

/// What to do with one claimed entry, decided from the stored record.
enum Plan {
    /// Finished already (another worker got there first), or gone (expired): just acknowledge.
    Acknowledge,
    /// Fail it with this message, then acknowledge.
    Fail(JobRecord, String),
    Run(JobRecord, headshot_core::GenerationJob),
}

async fn run_delivery(
    ctx: JobContext,
    worker: WorkerHandle,
    queue: Arc<dyn JobQueue>,
    delivery: Delivery,
) {
    let id = delivery.job_id;
    let claimed = delivery.clone();
    let plan = match blocking(&ctx, move |ctx| plan(ctx, &claimed)).await {
        Ok(plan) => plan,
        Err(e) => {
            // Left pending: it is delivered again after the claim timeout.
            tracing::warn!(id, error = %e, "could not read a claimed job; it will be delivered again");
            return;
        }
    };
    match plan {
        Plan::Acknowledge => {}
        Plan::Fail(mut record, message) => {
            tracing::warn!(id, message, "a claimed job cannot run");
            record.mark_failed(message);
            let webhook = delivery_for(&record, &ctx.urls);
            let stored = {
                let (jobs, record, webhook) = (ctx.jobs.clone(), record.clone(), webhook.clone());
                tokio::task::spawn_blocking(move || jobs.finish(&record, webhook.as_ref())).await
            };
            match stored {
                Ok(Ok(())) => {
                    if let Some(webhook) = webhook {
                        spawn_delivery(ctx.clone(), webhook);
                    }
                }
                _ => {
                    tracing::warn!(
                        id,
                        "could not store the failure; it will be delivered again"
                    );
                    return;
                }
            }
        }
        Plan::Run(record, job) => {
            tracing::info!(
                id,
                delivery = delivery.deliveries,
                "running a job from the shared queue"
            );
            let ticket = match worker.submit(job) {
                Ok(ticket) => ticket,
                Err(e) => {
                    // Full or draining: left pending for another worker (or this one later).
                    tracing::warn!(id, error = %e, "could not start a claimed job; it will be delivered again");
                    return;
                }
            };
            let seq = ticket.seq();
            let claim = Arc::new(ClaimState::default());
            let keeper = tokio::spawn(watch_claim(
                ctx.clone(),
                queue.clone(),
                delivery.clone(),
                worker.clone(),
                seq,
                claim.clone(),
            ));
            let done = spawn_completion_claimed(&ctx, record, ticket, Some(claim.clone()));
            let finished = done.await;
            keeper.abort();
            match finished {
                Ok(record) if !claim.dropped.load(Ordering::SeqCst) => {
                    tracing::info!(id, status = %record.status, "shared job finished and stored");
                }
                // Dropped: acknowledged only if its record is final (cancelled elsewhere);
                // a lost claim belongs to the worker that took the job.
                _ => {
                    let final_elsewhere = record_is_final(&ctx, id).await;
                    if !final_elsewhere {
                        return;
                    }
                }
            }
        }
    }
    let acker = queue.clone();
    let acked = tokio::task::spawn_blocking(move || acker.ack(&delivery)).await;
    match acked {
        Ok(Ok(())) => tracing::info!(id, "job acknowledged on the shared queue"),
        // Its record is final, so a second delivery is only acknowledged, never run again.
        _ => tracing::warn!(
            id,
            "could not acknowledge a finished job; a redelivery will"
        ),
    }
}

fn plan(ctx: &JobContext, delivery: &Delivery) -> Result<Plan, StoreError> {
    let Some(record) = ctx.jobs.get(delivery.job_id)? else {
        return Ok(Plan::Acknowledge);
    };
    if record.status.is_finished() {
        return Ok(Plan::Acknowledge);
    }
    if delivery.is_exhausted() {
        return Ok(Plan::Fail(record, delivery.exhausted_reason()));
    }
    match ctx.jobs.input(delivery.job_id) {
        Ok(Some(job)) => Ok(Plan::Run(record, job)),
        Ok(None) => Ok(Plan::Fail(record, INPUTS_LOST.to_string())),
        Err(e @ StoreError::Corrupt { .. }) => Ok(Plan::Fail(
            record,
            format!("The job's inputs could not be read ({e}); please submit it again."),
        )),
        Err(e) => Err(e),
    }
}

async fn blocking<T: Send + 'static>(
    ctx: &JobContext,
    f: impl FnOnce(&JobContext) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || f(&ctx))
        .await
        .unwrap_or_else(|e| Err(StoreError::Config(format!("a store call panicked: {e}"))))
}

/// How often a claimed job's progress is reported to the other nodes and its shared record
/// read, to stop it soon after a cancel on another node.
const RECORD_CHECK: Duration = Duration::from_secs(1);

/// While the job runs: renews the claim every third of the claim timeout, and every
/// [`RECORD_CHECK`] reports its progress (so `fetch` on any node answers it) and reads the
/// record. If the claim is lost (this worker stalled past the timeout and another took the
/// job) or the record is final (cancelled through another node), the local run is cancelled
/// and its outcome dropped, so a job is never finished twice.
async fn watch_claim(
    ctx: JobContext,
    queue: Arc<dyn JobQueue>,
    delivery: Delivery,
    worker: WorkerHandle,
    seq: u64,
    claim: Arc<ClaimState>,
) {
    let id = delivery.job_id;
    let period = (queue.visibility_timeout() / 3).max(Duration::from_millis(100));
    let mut renew = tokio::time::interval(period);
    let mut check = tokio::time::interval(RECORD_CHECK);
    renew.tick().await;
    check.tick().await;
    report_progress(&queue, &worker, id, seq).await;
    loop {
        tokio::select! {
            _ = renew.tick() => {
                let (q, d) = (queue.clone(), delivery.clone());
                match tokio::task::spawn_blocking(move || q.keep_alive(&d)).await {
                    Ok(Ok(true)) => continue,
                    // Generation is over and its outcome is being stored: too late to stop.
                    Ok(Ok(false)) if claim.finishing.load(Ordering::SeqCst) => return,
                    Ok(Ok(false)) => {
                        tracing::warn!(id, "lost the claim on a running job; stopping it here");
                    }
                    // Redis briefly down: keep trying; the claim outlasts a short outage.
                    Ok(Err(e)) => {
                        tracing::warn!(id, error = %e, "could not renew a claim");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(id, error = %e, "renewing a claim panicked");
                        continue;
                    }
                }
            }
            _ = check.tick() => {
                if claim.finishing.load(Ordering::SeqCst) {
                    continue;
                }
                report_progress(&queue, &worker, id, seq).await;
                if !record_is_final(&ctx, id).await {
                    continue;
                }
                tracing::info!(id, "the job was finished elsewhere (cancelled); stopping it here");
            }
        }
        claim.dropped.store(true, Ordering::SeqCst);
        worker.cancel(seq);
        return;
    }
}

/// Tells the other nodes where job `id` (the local worker's `seq`) is. A failed report is only
/// logged: the next one follows within [`RECORD_CHECK`], and fetch falls back to `processing`.
async fn report_progress(queue: &Arc<dyn JobQueue>, worker: &WorkerHandle, id: JobId, seq: u64) {
    let Some(progress) = worker.progress(seq) else {
        return;
    };
    let queue = queue.clone();
    match tokio::task::spawn_blocking(move || queue.report_progress(id, progress)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(id, error = %e, "could not report a job's progress"),
        Err(e) => tracing::error!(id, error = %e, "reporting a job's progress panicked"),
    }
}
