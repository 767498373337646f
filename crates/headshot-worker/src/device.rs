//! The device stage: one thread per device takes batches of prepared jobs from the device
//! queue, runs the generator with panics caught, and answers every job. Nothing here may panic
//! outside `catch_unwind`; if it ever does, the exit guard still fails the remaining jobs
//! instead of leaving their callers waiting forever.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use headshot_core::{
    error_chain, GenerationError, GenerationOutput, Generator, JobSettings, PreparedJob,
};

use crate::batch::{extend_batch, take_batch};
use crate::handle::JobResult;
use crate::metrics_names::*;
use crate::panics::guarded;
use crate::shared::{lock, Queued, Shared};

type JobOutcome = Result<GenerationOutput, GenerationError>;

/// Counts this thread out when it ends (normally or by an unexpected panic). The last device
/// thread out closes admission and the device queue and drops what is left, so waiting tickets
/// resolve as failed (the prepare stage then answers the jobs it still finishes).
struct ExitGuard {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if let Some(alive) = self.shared.device_alive.get(self.index) {
            alive.store(false, Ordering::Release);
        }
        if self.shared.live_devices.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
            let orphans: Vec<Queued<PreparedJob>> = {
                let mut queue = lock(&self.shared.queue);
                queue.closed = true;
                queue.jobs.drain(..).collect()
            };
            if !orphans.is_empty() {
                tracing::error!(
                    jobs = orphans.len(),
                    "all device threads stopped; failing queued jobs"
                );
            }
        }
        self.shared
            .live_threads
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

pub(crate) fn run(shared: Arc<Shared>, generator: Box<dyn Generator>, index: usize) {
    let guard = ExitGuard {
        shared: shared.clone(),
        index,
    };
    tracing::debug!(device = index, "device thread started");
    while let Some(batch) = next_batch(&shared, generator.as_ref(), index) {
        run_batch(&shared, generator.as_ref(), batch, index);
    }
    // Free the device (model weights) before shutdown reports the worker stopped.
    drop(generator);
    tracing::debug!(device = index, "device thread exiting");
    drop(guard);
}

/// Blocks until there is work; `None` once the queue is closed and empty.
fn next_batch(
    shared: &Shared,
    generator: &dyn Generator,
    device: usize,
) -> Option<Vec<Queued<PreparedJob>>> {
    let max_images = guarded(|| generator.max_batch_images()).unwrap_or(1).max(1);
    let mut queue = lock(&shared.queue);
    while queue.jobs.is_empty() {
        if queue.closed {
            return None;
        }
        // Idle while jobs are still being prepared: the time a separate prepare stage saves.
        let waiting_for_prepare = shared.in_prepare.load(Ordering::Acquire) > 0;
        let idle_since = Instant::now();
        queue = shared
            .available
            .wait(queue)
            .unwrap_or_else(|p| p.into_inner());
        if waiting_for_prepare {
            let idle = idle_since.elapsed();
            shared
                .idle_with_work_nanos
                .fetch_add(idle.as_nanos() as u64, Ordering::Relaxed);
            metrics::histogram!(METRIC_DEVICE_IDLE_WITH_WORK).record(idle.as_secs_f64());
        }
    }
    let mut batch = take_batch(&mut queue.jobs, max_images, settings_of);
    let key = batch[0].job.settings.batch_key();
    let mut images: usize = batch.iter().map(|q| q.job.settings.images()).sum();

    // Optionally linger a little for compatible jobs to fill the batch.
    let wait = shared.config.batch_wait;
    if !wait.is_zero() && images < max_images {
        let deadline = Instant::now() + wait;
        while images < max_images && !queue.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let (guard, _) = shared
                .available
                .wait_timeout(queue, deadline - now)
                .unwrap_or_else(|p| p.into_inner());
            queue = guard;
            extend_batch(
                &mut queue.jobs,
                &mut batch,
                &mut images,
                key,
                max_images,
                &settings_of,
            );
        }
    }
    metrics::gauge!(METRIC_QUEUE_DEPTH).set(queue.jobs.len() as f64);
    // In admission order within the batch, however the prepare threads finished them.
    batch.sort_by_key(|q| q.seq);
    lock(&shared.times).started(
        device,
        batch.iter().map(|q| q.seq).collect(),
        batch.iter().map(|q| q.work).sum(),
        Instant::now(),
    );
    Some(batch)
}

fn settings_of(queued: &Queued<PreparedJob>) -> &JobSettings {
    &queued.job.settings
}

fn run_batch(
    shared: &Shared,
    generator: &dyn Generator,
    batch: Vec<Queued<PreparedJob>>,
    device: usize,
) {
    let size = batch.len();
    let key = batch[0].job.settings.batch_key();
    let span = tracing::info_span!(
        "generate_batch",
        device,
        size,
        width = key.width,
        height = key.height,
        steps = key.num_inference_steps,
        guided = key.guided,
    );
    for queued in &batch {
        span.follows_from(&queued.span);
    }
    let _entered = span.enter();

    let started = Instant::now();
    let mut jobs = Vec::with_capacity(size);
    let mut waiting = Vec::with_capacity(size);
    for queued in batch {
        let queue_wait = started.saturating_duration_since(queued.admitted_at);
        metrics::histogram!(METRIC_QUEUE_WAIT).record(queue_wait.as_secs_f64());
        queued.span.in_scope(|| {
            tracing::info!(
                batch = size,
                queue_wait_s = queue_wait.as_secs_f64(),
                "job started"
            )
        });
        let (queued, job) = queued.with_job(queue_wait);
        waiting.push(queued);
        jobs.push(job);
    }

    let outcomes = generate_guarded(generator, &jobs);
    let elapsed = started.elapsed();
    lock(&shared.times).finished(device, elapsed);
    metrics::histogram!(METRIC_BATCH_SIZE).record(size as f64);
    metrics::histogram!(METRIC_BATCH_DURATION).record(elapsed.as_secs_f64());

    for (queued, output) in waiting.into_iter().zip(outcomes) {
        metrics::histogram!(METRIC_JOB_DURATION).record(elapsed.as_secs_f64());
        queued.span.in_scope(|| match &output {
            Ok(out) => {
                metrics::counter!(METRIC_JOBS_FINISHED, "outcome" => "success").increment(1);
                tracing::info!(
                    images = out.images.len(),
                    seconds = elapsed.as_secs_f64(),
                    "job done"
                );
            }
            Err(error) => {
                metrics::counter!(METRIC_JOBS_FINISHED, "outcome" => "failed").increment(1);
                tracing::warn!(error = %error_chain(error), "job failed");
            }
        });
        let queue_wait = queued.job;
        queued.answer(JobResult {
            output,
            generation_time: elapsed,
            queue_wait,
            batch_size: size,
        });
    }
    metrics::gauge!(METRIC_JOBS_IN_FLIGHT).set(shared.in_flight() as f64);
}

/// Runs the batch with panics caught. If a batch of several panics, each job is retried alone
/// so only the job that causes the panic fails. Always returns one outcome per job.
fn generate_guarded(generator: &dyn Generator, jobs: &[PreparedJob]) -> Vec<JobOutcome> {
    match guarded(|| generator.generate_batch(jobs)) {
        Ok(outcomes) if outcomes.len() == jobs.len() => outcomes,
        Ok(mut outcomes) => {
            tracing::error!(
                expected = jobs.len(),
                got = outcomes.len(),
                "the generator returned the wrong number of results; failing the unanswered jobs"
            );
            outcomes.truncate(jobs.len());
            while outcomes.len() < jobs.len() {
                outcomes.push(Err(GenerationError::internal(
                    "the generator returned no result for this job",
                )));
            }
            outcomes
        }
        Err(error) if jobs.len() == 1 => vec![Err(error)],
        Err(error) => {
            tracing::warn!(
                jobs = jobs.len(),
                %error,
                "a batch panicked; retrying its jobs one by one"
            );
            jobs.iter()
                .map(|job| guarded(|| generator.generate(job)).and_then(|r| r))
                .collect()
        }
    }
}
