//! The async face of the worker: spawning device threads, admitting jobs, tickets, shutdown.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use headshot_core::{GenerationError, GenerationJob, GenerationOutput, Generator};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::WorkerConfig;
use crate::error::{SubmitError, WorkerError};
use crate::eta::{work_of, Estimator};
use crate::metrics_names::*;
use crate::thread;

/// What a finished job hands back.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// The images, or why there are none (a panic in the generator becomes `Internal`).
    pub output: Result<GenerationOutput, GenerationError>,
    /// Wall time of the generator call that produced this job (its whole batch).
    pub generation_time: Duration,
    /// Time from admission until the generator started on it.
    pub queue_wait: Duration,
    /// How many jobs shared the generator call.
    pub batch_size: usize,
}

impl JobResult {
    fn worker_stopped() -> Self {
        JobResult {
            output: Err(GenerationError::Internal(
                "the worker stopped before this job ran; submit it again".to_string(),
            )),
            generation_time: Duration::ZERO,
            queue_wait: Duration::ZERO,
            batch_size: 0,
        }
    }
}

/// An admitted job. Await it for the [`JobResult`]; dropping it does not cancel the job (the
/// worker still runs it, so a background task can pick up where a timed-out request left off
/// only if it keeps the ticket).
#[derive(Debug)]
pub struct JobTicket {
    seq: u64,
    position: usize,
    eta: Duration,
    reply: oneshot::Receiver<JobResult>,
}

impl JobTicket {
    /// The worker's own sequence number for this job (admission order; used in logs).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How many admitted jobs (running or waiting) were ahead of this one at submission.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Estimated time until this job is done, as of submission (the `eta` of `processing`).
    pub fn eta(&self) -> Duration {
        self.eta
    }
}

impl Future for JobTicket {
    type Output = JobResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<JobResult> {
        match Pin::new(&mut self.reply).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The sender was dropped unanswered: every device thread died.
            Poll::Ready(Err(_)) => Poll::Ready(JobResult::worker_stopped()),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A job waiting in the queue with everything needed to answer it.
pub(crate) struct Queued {
    pub seq: u64,
    /// The job's work in reference jobs (for estimates).
    pub work: f64,
    pub job: GenerationJob,
    pub reply: oneshot::Sender<JobResult>,
    pub admitted_at: Instant,
    /// The job's span (a child of the submitter's), so its logs nest under the request.
    pub span: tracing::Span,
    /// The admission slot; released when the job's result is sent.
    pub permit: OwnedSemaphorePermit,
}

pub(crate) struct QueueState {
    pub jobs: VecDeque<Queued>,
    /// No more jobs will come; device threads drain what is left and exit.
    pub closed: bool,
}

pub(crate) struct Shared {
    pub config: WorkerConfig,
    pub devices: usize,
    pub admission: Arc<Semaphore>,
    pub queue: Mutex<QueueState>,
    pub available: Condvar,
    /// Lock order: `queue` before `times`, never the other way round.
    pub times: Mutex<Estimator>,
    pub next_seq: AtomicU64,
    /// Device threads still running; shutdown waits for zero.
    pub live_threads: watch::Sender<usize>,
}

/// Locks ignoring poison: every critical section leaves the state consistent, and the worker
/// must keep serving after a panic elsewhere.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn in_flight(&self) -> usize {
        self.config
            .queue_size
            .saturating_sub(self.admission.available_permits())
    }

    /// Stops admission and tells the device threads to exit once the queue is empty.
    pub(crate) fn close(&self) {
        self.admission.close();
        lock(&self.queue).closed = true;
        self.available.notify_all();
    }
}

/// Closes the queue when the last [`WorkerHandle`] is dropped, so device threads drain and exit.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// Starts workers.
pub struct Worker;

impl Worker {
    /// One device thread owning `generator`.
    pub fn spawn(
        generator: Box<dyn Generator>,
        config: WorkerConfig,
    ) -> Result<WorkerHandle, WorkerError> {
        Self::spawn_pool(vec![generator], config)
    }

    /// One device thread per generator (e.g. one per GPU), all fed by one queue.
    pub fn spawn_pool(
        generators: Vec<Box<dyn Generator>>,
        config: WorkerConfig,
    ) -> Result<WorkerHandle, WorkerError> {
        if generators.is_empty() {
            return Err(WorkerError::NoGenerators);
        }
        if config.queue_size == 0 {
            return Err(WorkerError::ZeroQueueSize);
        }
        let mut config = config;
        config.queue_size = config.queue_size.min(Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            devices: generators.len(),
            admission: Arc::new(Semaphore::new(config.queue_size)),
            queue: Mutex::new(QueueState {
                jobs: VecDeque::with_capacity(config.queue_size.min(1024)),
                closed: false,
            }),
            available: Condvar::new(),
            times: Mutex::new(Estimator::new(
                generators.len(),
                config.eta_window,
                config.initial_job_estimate,
            )),
            next_seq: AtomicU64::new(1),
            live_threads: watch::channel(0).0,
            config,
        });
        let handle = WorkerHandle {
            owner: Arc::new(Owner {
                shared: shared.clone(),
            }),
        };
        for (index, generator) in generators.into_iter().enumerate() {
            let name = format!("{}-{index}", shared.config.name);
            shared.live_threads.send_modify(|n| *n += 1);
            let thread_shared = shared.clone();
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || thread::run(thread_shared, generator, index))
                .map_err(|source| {
                    shared.live_threads.send_modify(|n| *n -= 1);
                    // Dropping `handle` closes the queue and lets started threads exit.
                    WorkerError::Spawn { name, source }
                })?;
        }
        tracing::info!(
            name = %shared.config.name,
            devices = shared.devices,
            queue_size = shared.config.queue_size,
            "worker started"
        );
        Ok(handle)
    }
}

/// Cheap to clone; the device threads stop once every clone is dropped (after draining) or
/// after [`WorkerHandle::shutdown`].
#[derive(Clone)]
pub struct WorkerHandle {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("name", &self.shared().config.name)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl WorkerHandle {
    fn shared(&self) -> &Shared {
        &self.owner.shared
    }

    /// Admits a job without waiting: `QueueFull` when `queue_size` jobs are already admitted,
    /// `ShuttingDown` after shutdown began.
    pub fn submit(&self, job: GenerationJob) -> Result<JobTicket, SubmitError> {
        let shared = self.shared();
        let permit = match shared.admission.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                metrics::counter!(METRIC_QUEUE_FULL).increment(1);
                return Err(SubmitError::QueueFull {
                    max: shared.config.queue_size,
                    retry_after: self.retry_after(),
                });
            }
            Err(TryAcquireError::Closed) => return Err(SubmitError::ShuttingDown),
        };
        let ahead = shared.in_flight().saturating_sub(1);
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let work = work_of(&job);
        // A span per job, under the submitter's span (the request that made it).
        let span = tracing::info_span!("job", seq);
        let (reply, receiver) = oneshot::channel();
        let eta = {
            let mut queue = lock(&shared.queue);
            if queue.closed {
                return Err(SubmitError::ShuttingDown);
            }
            let queued_ahead: f64 = queue.jobs.iter().map(|q| q.work).sum();
            let eta = lock(&shared.times).eta(queued_ahead, work, Instant::now());
            queue.jobs.push_back(Queued {
                seq,
                work,
                job,
                reply,
                admitted_at: Instant::now(),
                span: span.clone(),
                permit,
            });
            metrics::gauge!(METRIC_QUEUE_DEPTH).set(queue.jobs.len() as f64);
            eta
        };
        metrics::gauge!(METRIC_JOBS_IN_FLIGHT).set(shared.in_flight() as f64);
        // Wake every device thread: one may be idle, another collecting a batch.
        shared.available.notify_all();
        span.in_scope(|| tracing::debug!(ahead, eta_s = eta.as_secs_f64(), "job admitted"));
        Ok(JobTicket {
            seq,
            position: ahead,
            eta,
            reply: receiver,
        })
    }

    /// Estimated time until a reference job (512x512, 21 steps, one sample) submitted now
    /// would be done.
    pub fn eta_for_new_job(&self) -> Duration {
        let shared = self.shared();
        let queue = lock(&shared.queue);
        let queued: f64 = queue.jobs.iter().map(|q| q.work).sum();
        let eta = lock(&shared.times).eta(queued, 1.0, Instant::now());
        eta
    }

    /// Estimated time from now until job `seq` (see [`JobTicket::seq`]) is done: its place in
    /// the queue, or what is left of its running batch; zero once it has finished.
    pub fn eta_of(&self, seq: u64) -> Duration {
        let shared = self.shared();
        let queue = lock(&shared.queue);
        let now = Instant::now();
        let mut ahead = 0.0;
        for queued in &queue.jobs {
            if queued.seq == seq {
                return lock(&shared.times).eta(ahead, queued.work, now);
            }
            ahead += queued.work;
        }
        let eta = lock(&shared.times).running_eta(seq, now);
        eta.unwrap_or(Duration::ZERO)
    }

    /// When a queue slot is expected to free up (the rate-limit answer's `retry_after`).
    pub fn retry_after(&self) -> Duration {
        let shared = self.shared();
        let queue = lock(&shared.queue);
        let next = queue.jobs.front().map(|q| q.work);
        let after = lock(&shared.times).retry_after(next);
        after
    }

    /// Moving average of the time one reference job takes (the configured guess before any).
    pub fn average_job_time(&self) -> Duration {
        lock(&self.shared().times).per_job()
    }

    /// The most jobs admitted at once (`Maximum N queued requests`).
    pub fn max_queue_size(&self) -> usize {
        self.shared().config.queue_size
    }

    /// Jobs admitted and not yet answered (waiting + running).
    pub fn in_flight(&self) -> usize {
        self.shared().in_flight()
    }

    /// Jobs waiting for a device thread.
    pub fn queue_depth(&self) -> usize {
        lock(&self.shared().queue).jobs.len()
    }

    /// Shutdown has begun (or every handle but this one was dropped): no new jobs are taken.
    pub fn is_closed(&self) -> bool {
        self.shared().admission.is_closed()
    }

    /// Number of device threads.
    pub fn devices(&self) -> usize {
        self.shared().devices
    }

    /// Stops admitting jobs, lets the device threads finish every admitted job, and waits until
    /// they have exited (and dropped their generators). Safe to call from several clones.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        tracing::info!(name = %shared.config.name, in_flight = shared.in_flight(), "worker draining");
        shared.close();
        let mut live = shared.live_threads.subscribe();
        // Err only if the sender is gone, which cannot happen while `shared` is alive.
        let _ = live.wait_for(|n| *n == 0).await;
        tracing::info!(name = %shared.config.name, "worker stopped");
    }
}
