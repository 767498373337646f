//! The device stage: one thread per device takes batches of prepared jobs from the device
//! queue, runs the generator with panics caught, and answers every job. Nothing here may panic
//! outside `catch_unwind`; if it ever does, the exit guard still fails the remaining jobs
//! instead of leaving their callers waiting forever.
//!
//! Running jobs sit in the shared `running` map with their answer, so a cancel answers them at
//! once; after each denoising step the batch's observer records the step there and stops the
//! batch once none of its jobs is left (the images of a cancelled job in a live batch are
//! discarded).

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use headshot_core::{
    error_chain, GenerationError, GenerationOutput, Generator, JobSettings, PreparedJob,
    StepObserver,
};

use crate::batch::{extend_batch, take_batch};
use crate::handle::JobResult;
use crate::metrics_names::*;
use crate::panics::guarded;
use crate::shared::{lock, Queued, RunningJob, Shared};

type JobOutcome = Result<GenerationOutput, GenerationError>;

/// Counts this thread out when it ends (normally or by an unexpected panic). The last device
/// thread out closes admission and the device queue and drops what is left, so waiting tickets
/// resolve as failed (the prepare stage then answers the jobs it still finishes).
struct ExitGuard {
    shared: Arc<Shared>,
    device: usize,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        // Only after an unexpected panic: the jobs this thread was running resolve as failed.
        lock(&self.shared.running).retain(|_, job| job.device != self.device);
        if let Some(alive) = self.shared.device_alive.get(self.device) {
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
        device: index,
    };
    tracing::debug!(device = index, "device thread started");
    report_model_sets(&shared, generator.as_ref(), index);
    while let Some(batch) = next_batch(&shared, generator.as_ref(), index) {
        run_batch(&shared, generator.as_ref(), batch, index);
        report_model_sets(&shared, generator.as_ref(), index);
    }
    // Free the device (model weights) before shutdown reports the worker stopped.
    drop(generator);
    tracing::debug!(device = index, "device thread exiting");
    drop(guard);
}

/// Publishes which base models the generator holds now (a batch may have loaded one and
/// unloaded others), for `system_details` and the metrics.
fn report_model_sets(shared: &Shared, generator: &dyn Generator, device: usize) {
    let Ok(states) = guarded(|| generator.model_sets()) else {
        return;
    };
    for state in &states {
        let labels = [
            ("device", device.to_string()),
            ("model_set", state.id.clone()),
        ];
        metrics::gauge!(METRIC_MODEL_SET_LOADED, &labels).set(if state.loaded { 1.0 } else { 0.0 });
        if let Some(bytes) = state.bytes {
            metrics::gauge!(METRIC_MODEL_SET_BYTES, &labels).set(bytes as f64);
        }
    }
    if let Some(slot) = shared.device_model_sets.get(device) {
        *lock(slot) = states;
    }
}

/// Unloads the generator's on-demand base models if `clear_cache` asked for it; true if it did.
fn unload_if_asked(shared: &Shared, generator: &dyn Generator, device: usize) -> bool {
    let asked = shared
        .unload_requested
        .get(device)
        .is_some_and(|flag| flag.swap(false, Ordering::AcqRel));
    if asked {
        if let Ok(unloaded) = guarded(|| generator.unload_model_sets()) {
            tracing::info!(device, unloaded = ?unloaded, "base models loaded on demand unloaded");
        }
    }
    asked
}

/// A batch as a device thread runs it; its jobs' answers wait in the `running` map.
struct Batch {
    jobs: Vec<PreparedJob>,
    seqs: Vec<u64>,
    spans: Vec<tracing::Span>,
    started: Instant,
}

/// Blocks until there is work; `None` once the queue is closed and empty. The batch's jobs
/// move to `running` under the queue lock, so a cancel always finds a job in one of the two.
fn next_batch(shared: &Shared, generator: &dyn Generator, device: usize) -> Option<Batch> {
    let max_images = guarded(|| generator.max_batch_images()).unwrap_or(1).max(1);
    // Between two batches: an unload asked for during the last one happens now.
    if unload_if_asked(shared, generator, device) {
        report_model_sets(shared, generator, device);
    }
    let mut queue = lock(&shared.queue);
    while queue.jobs.is_empty() {
        if queue.closed {
            return None;
        }
        // An idle device frees its on-demand models at once (outside the queue lock).
        let unload = shared.unload_requested.get(device);
        if unload.is_some_and(|flag| flag.load(Ordering::Acquire)) {
            drop(queue);
            if unload_if_asked(shared, generator, device) {
                report_model_sets(shared, generator, device);
            }
            queue = lock(&shared.queue);
            continue;
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
                &key,
                max_images,
                &settings_of,
            );
        }
    }
    metrics::gauge!(METRIC_QUEUE_DEPTH).set(queue.jobs.len() as f64);
    // In admission order within the batch, however the prepare threads finished them.
    batch.sort_by_key(|q| q.seq);
    let started = Instant::now();
    let seqs: Vec<u64> = batch.iter().map(|q| q.seq).collect();
    let work = batch.iter().map(|q| q.work).sum();
    let size = batch.len();
    let mut jobs = Vec::with_capacity(size);
    let mut spans = Vec::with_capacity(size);
    let mut running = lock(&shared.running);
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
        let total = queued.job.settings.num_inference_steps as usize;
        let (mut queued, job) = queued.with_job(queue_wait);
        if let Some(started) = queued.started.take() {
            let _ = started.send(());
        }
        spans.push(queued.span.clone());
        running.insert(
            queued.seq,
            RunningJob {
                device,
                queued,
                step: 0,
                total,
            },
        );
        jobs.push(job);
    }
    drop(running);
    lock(&shared.times).started(device, seqs.clone(), work, started);
    Some(Batch {
        jobs,
        seqs,
        spans,
        started,
    })
}

/// Records each denoising step of a batch for its jobs' progress, and stops the batch once
/// every one of its jobs was cancelled.
struct BatchProgress<'a> {
    shared: &'a Shared,
    seqs: &'a [u64],
    device: usize,
}

impl StepObserver for BatchProgress<'_> {
    fn step_done(&self, done: usize, total: usize) -> ControlFlow<()> {
        let mut live = 0;
        {
            let mut running = lock(&self.shared.running);
            for seq in self.seqs {
                if let Some(job) = running.get_mut(seq) {
                    job.step = done;
                    job.total = total;
                    live += 1;
                }
            }
        }
        metrics::counter!(METRIC_DENOISE_STEPS).increment(1);
        tracing::debug!(
            device = self.device,
            step = done,
            total,
            live,
            "denoise step done"
        );
        if live == 0 {
            tracing::info!(
                device = self.device,
                "every job of the batch was cancelled; stopping it"
            );
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

fn settings_of(queued: &Queued<PreparedJob>) -> &JobSettings {
    &queued.job.settings
}

fn run_batch(shared: &Shared, generator: &dyn Generator, batch: Batch, device: usize) {
    let size = batch.jobs.len();
    let key = batch.jobs[0].settings.batch_key();
    let span = tracing::info_span!(
        "generate_batch",
        device,
        size,
        width = key.width,
        height = key.height,
        steps = key.num_inference_steps,
        guided = key.guided,
    );
    for job_span in &batch.spans {
        span.follows_from(job_span);
    }
    let _entered = span.enter();

    let observer = BatchProgress {
        shared,
        seqs: &batch.seqs,
        device,
    };
    let outcomes = generate_guarded(generator, &batch.jobs, &observer);
    let elapsed = batch.started.elapsed();
    lock(&shared.times).finished(device, elapsed);
    metrics::histogram!(METRIC_BATCH_SIZE).record(size as f64);
    metrics::histogram!(METRIC_BATCH_DURATION).record(elapsed.as_secs_f64());

    let answers: Vec<Option<Queued<_>>> = {
        let mut running = lock(&shared.running);
        batch
            .seqs
            .iter()
            .map(|seq| running.remove(seq).map(|job| job.queued))
            .collect()
    };
    let jobs = batch.jobs.into_iter();
    for (((queued, output), job_span), job) in answers
        .into_iter()
        .zip(outcomes)
        .zip(&batch.spans)
        .zip(jobs)
    {
        let Some(queued) = queued else {
            job_span.in_scope(|| tracing::debug!("cancelled while running; output discarded"));
            continue;
        };
        let image_seeds = job.settings.image_seeds();
        let face = job.face;
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
            identity: Some(face.id_embedding),
            faces_found: Some(face.faces_found),
            image_seeds,
        });
    }
    metrics::gauge!(METRIC_JOBS_IN_FLIGHT).set(shared.in_flight() as f64);
}

/// Runs the batch with panics caught. If a batch of several panics, each job is retried alone
/// so only the job that causes the panic fails. Always returns one outcome per job.
fn generate_guarded(
    generator: &dyn Generator,
    jobs: &[PreparedJob],
    observer: &dyn StepObserver,
) -> Vec<JobOutcome> {
    match guarded(|| generator.generate_batch_observed(jobs, observer)) {
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
