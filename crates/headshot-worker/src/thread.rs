//! The device thread: takes batches from the queue, runs the generator with panics caught, and
//! answers every job. Nothing here may panic outside `catch_unwind`; if it ever does, the exit
//! guard still fails the remaining jobs instead of leaving their callers waiting forever.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use headshot_core::{GenerationError, GenerationJob, GenerationOutput, Generator};

use crate::batch::{extend_batch, images_of, take_batch, BatchKey};
use crate::handle::{lock, JobResult, Queued, Shared};
use crate::metrics_names::*;

type JobOutcome = Result<GenerationOutput, GenerationError>;

/// Counts this thread out when it ends (normally or by an unexpected panic). The last thread
/// out closes the queue and drops what is left, so waiting tickets resolve as failed.
struct ExitGuard {
    shared: Arc<Shared>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let mut last = false;
        self.shared.live_threads.send_modify(|n| {
            *n = n.saturating_sub(1);
            last = *n == 0;
        });
        if last {
            self.shared.close();
            let orphans: Vec<Queued> = lock(&self.shared.queue).jobs.drain(..).collect();
            if !orphans.is_empty() {
                tracing::error!(
                    jobs = orphans.len(),
                    "all device threads stopped; failing queued jobs"
                );
            }
        }
    }
}

pub(crate) fn run(shared: Arc<Shared>, generator: Box<dyn Generator>, index: usize) {
    let guard = ExitGuard {
        shared: shared.clone(),
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
fn next_batch(shared: &Shared, generator: &dyn Generator, device: usize) -> Option<Vec<Queued>> {
    let max_images = catch_unwind(AssertUnwindSafe(|| generator.max_batch_images()))
        .unwrap_or(1)
        .max(1);
    let mut queue = lock(&shared.queue);
    while queue.jobs.is_empty() {
        if queue.closed {
            return None;
        }
        queue = shared
            .available
            .wait(queue)
            .unwrap_or_else(|p| p.into_inner());
    }
    let mut batch = take_batch(&mut queue.jobs, max_images, |q: &Queued| &q.job);
    let key = BatchKey::of(&batch[0].job);
    let mut images: usize = batch.iter().map(|q| images_of(&q.job)).sum();

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
                &|q: &Queued| &q.job,
            );
        }
    }
    metrics::gauge!(METRIC_QUEUE_DEPTH).set(queue.jobs.len() as f64);
    lock(&shared.times).started(
        device,
        batch.iter().map(|q| q.seq).collect(),
        batch.iter().map(|q| q.work).sum(),
        Instant::now(),
    );
    Some(batch)
}

fn run_batch(shared: &Shared, generator: &dyn Generator, batch: Vec<Queued>, device: usize) {
    let size = batch.len();
    let key = BatchKey::of(&batch[0].job);
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
        waiting.push((queued.reply, queued.span, queued.permit, queue_wait));
        jobs.push(queued.job);
    }

    let outcomes = generate_guarded(generator, &jobs);
    let elapsed = started.elapsed();
    lock(&shared.times).finished(device, elapsed);
    metrics::histogram!(METRIC_BATCH_SIZE).record(size as f64);

    for ((reply, job_span, permit, queue_wait), output) in waiting.into_iter().zip(outcomes) {
        metrics::histogram!(METRIC_JOB_DURATION).record(elapsed.as_secs_f64());
        job_span.in_scope(|| match &output {
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
                metrics::counter!(METRIC_JOB_FAILURES).increment(1);
                tracing::warn!(%error, "job failed");
            }
        });
        // Free the slot before answering, so a caller that resubmits on the answer finds room.
        drop(permit);
        // The caller may have stopped waiting; the result is simply dropped then.
        let _ = reply.send(JobResult {
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
fn generate_guarded(generator: &dyn Generator, jobs: &[GenerationJob]) -> Vec<JobOutcome> {
    match catch_unwind(AssertUnwindSafe(|| generator.generate_batch(jobs))) {
        Ok(outcomes) if outcomes.len() == jobs.len() => outcomes,
        Ok(mut outcomes) => {
            tracing::error!(
                expected = jobs.len(),
                got = outcomes.len(),
                "the generator returned the wrong number of results; failing the unanswered jobs"
            );
            outcomes.truncate(jobs.len());
            while outcomes.len() < jobs.len() {
                outcomes.push(Err(GenerationError::Internal(
                    "the generator returned no result for this job".to_string(),
                )));
            }
            outcomes
        }
        Err(panic) => {
            metrics::counter!(METRIC_GENERATOR_PANICS).increment(1);
            if jobs.len() == 1 {
                return vec![Err(panicked(panic.as_ref()))];
            }
            tracing::warn!(
                jobs = jobs.len(),
                message = %panic_message(panic.as_ref()),
                "a batch panicked; retrying its jobs one by one"
            );
            jobs.iter()
                .map(|job| {
                    catch_unwind(AssertUnwindSafe(|| generator.generate(job))).unwrap_or_else(|p| {
                        metrics::counter!(METRIC_GENERATOR_PANICS).increment(1);
                        Err(panicked(p.as_ref()))
                    })
                })
                .collect()
        }
    }
}

fn panicked(payload: &(dyn Any + Send)) -> GenerationError {
    let message = panic_message(payload);
    tracing::error!(%message, "the generator panicked; the job failed and the worker goes on");
    GenerationError::Internal(format!("the generator panicked: {message}"))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}
