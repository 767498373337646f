//! The prepare stage: a small pool of CPU threads that check each admitted job against the
//! generators' limits and analyse its face photo (decode, detect, align, embed), before it may
//! take a place in the device queue. A bad photo is answered here; the device threads only
//! ever see prepared jobs, so face analysis never holds up a GPU.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use headshot_core::{error_chain, prepare_job, FacePreparer, GenerationJob};

use crate::handle::JobResult;
use crate::metrics_names::*;
use crate::panics::guarded;
use crate::shared::{lock, Queued, Shared};

/// Counts this thread out when it ends. The last prepare thread out closes the device queue
/// (no more prepared jobs will come); if it ends by an unexpected panic, admission closes too
/// and the jobs still waiting fail instead of waiting forever.
struct ExitGuard {
    shared: Arc<Shared>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if self.shared.live_preparers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
            let orphans: Vec<_> = lock(&self.shared.prepare).jobs.drain(..).collect();
            if !orphans.is_empty() {
                tracing::error!(
                    jobs = orphans.len(),
                    "all prepare threads stopped; failing waiting jobs"
                );
                self.shared
                    .in_prepare
                    .fetch_sub(orphans.len(), Ordering::AcqRel);
            }
            self.shared.close_device_queue();
        }
        self.shared
            .live_threads
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

pub(crate) fn run(shared: Arc<Shared>, faces: Arc<dyn FacePreparer>, index: usize) {
    let _guard = ExitGuard {
        shared: shared.clone(),
    };
    tracing::debug!(preparer = index, "prepare thread started");
    while let Some(queued) = next_job(&shared) {
        prepare_one(&shared, faces.as_ref(), queued);
    }
    tracing::debug!(preparer = index, "prepare thread exiting");
}

/// Blocks until there is a job to prepare; `None` once admission closed and the queue is empty.
fn next_job(shared: &Shared) -> Option<Queued<GenerationJob>> {
    let mut state = lock(&shared.prepare);
    loop {
        if let Some(queued) = state.jobs.pop_front() {
            state.preparing.push((queued.seq, queued.work));
            return Some(queued);
        }
        if state.closed {
            return None;
        }
        state = shared
            .to_prepare
            .wait(state)
            .unwrap_or_else(|p| p.into_inner());
    }
}

fn prepare_one(shared: &Shared, faces: &dyn FacePreparer, queued: Queued<GenerationJob>) {
    let span = queued.span.clone();
    let _entered = span.enter();
    let started = Instant::now();
    let (queued, job) = queued.with_job(());
    let outcome = guarded(|| prepare_job(job, &shared.limits, faces)).and_then(|r| r);
    metrics::histogram!(METRIC_PREPARE_DURATION).record(started.elapsed().as_secs_f64());

    let mut prepare = lock(&shared.prepare);
    prepare.preparing.retain(|(seq, _)| *seq != queued.seq);
    if prepare.cancelled.remove(&queued.seq) {
        shared.in_prepare.fetch_sub(1, Ordering::AcqRel);
        drop(prepare);
        queued.cancel();
        metrics::gauge!(METRIC_JOBS_IN_FLIGHT).set(shared.in_flight() as f64);
        return;
    }
    match outcome {
        Ok(prepared) => {
            let mut queue = lock(&shared.queue);
            let (queued, ()) = queued.with_job(prepared);
            if queue.closed {
                // Every device thread stopped; nobody would ever run it.
                drop((queue, prepare));
                shared.in_prepare.fetch_sub(1, Ordering::AcqRel);
                queued.answer(JobResult::worker_stopped());
                return;
            }
            // In admission order, so a job prepared late still goes before later ones.
            let at = queue
                .jobs
                .iter()
                .rposition(|q| q.seq < queued.seq)
                .map_or(0, |i| i + 1);
            queue.jobs.insert(at, queued);
            metrics::gauge!(METRIC_QUEUE_DEPTH).set(queue.jobs.len() as f64);
            shared.in_prepare.fetch_sub(1, Ordering::AcqRel);
            drop((queue, prepare));
            // Wake every device thread: one may be idle, another collecting a batch.
            shared.available.notify_all();
            tracing::debug!(seconds = started.elapsed().as_secs_f64(), "job prepared");
        }
        Err(error) => {
            shared.in_prepare.fetch_sub(1, Ordering::AcqRel);
            drop(prepare);
            metrics::counter!(METRIC_JOBS_FINISHED, "outcome" => "failed").increment(1);
            tracing::warn!(error = %error_chain(&error), "job refused before the device queue");
            let queue_wait = started.saturating_duration_since(queued.admitted_at);
            queued.answer(JobResult {
                output: Err(error),
                generation_time: Duration::ZERO,
                queue_wait,
                batch_size: 0,
                identity: None,
                faces_found: None,
                image_seeds: None,
            });
            metrics::gauge!(METRIC_JOBS_IN_FLIGHT).set(shared.in_flight() as f64);
        }
    }
}
