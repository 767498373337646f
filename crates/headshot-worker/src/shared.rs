//! The state the stages share: the prepare queue (admitted jobs waiting for face analysis),
//! the device queue (prepared jobs waiting for a device thread), and the counters behind
//! estimates, and the jobs on a device with how far their batch got. Lock order: `prepare`
//! before `queue` before `running` before `times`, never the other way round.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use headshot_core::JobLimits;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::config::WorkerConfig;
use crate::eta::Estimator;
use crate::handle::JobResult;
use crate::metrics_names::METRIC_JOBS_FINISHED;

/// A job between admission and its answer, with everything needed to answer it. `J` is what
/// the job is at its stage: a `GenerationJob` waiting to be prepared, a `PreparedJob` waiting
/// for a device.
pub(crate) struct Queued<J> {
    pub seq: u64,
    /// The job's work in reference jobs (for estimates).
    pub work: f64,
    pub job: J,
    pub reply: oneshot::Sender<JobResult>,
    pub admitted_at: Instant,
    /// The job's span (a child of the submitter's), so its logs nest under the request.
    pub span: tracing::Span,
    /// The admission slot; released when the job's result is sent.
    pub permit: OwnedSemaphorePermit,
    /// Told when a device thread starts the job (dropped unsent if it never does).
    pub started: Option<oneshot::Sender<()>>,
}

impl<J> Queued<J> {
    /// The same job at its next stage.
    pub fn with_job<K>(self, job: K) -> (Queued<K>, J) {
        let Queued {
            seq,
            work,
            job: old,
            reply,
            admitted_at,
            span,
            permit,
            started,
        } = self;
        (
            Queued {
                seq,
                work,
                job,
                reply,
                admitted_at,
                span,
                permit,
                started,
            },
            old,
        )
    }

    /// Answers the job now: frees its slot first, so a caller that resubmits on the answer
    /// finds room. The caller may have stopped waiting; the result is simply dropped then.
    pub fn answer(self, result: JobResult) {
        drop(self.permit);
        let _ = self.reply.send(result);
    }

    /// Answers the job as cancelled (it never runs, or its images are discarded).
    pub fn cancel(self) {
        metrics::counter!(METRIC_JOBS_FINISHED, "outcome" => "cancelled").increment(1);
        self.span.in_scope(|| tracing::info!("job cancelled"));
        self.answer(JobResult::cancelled());
    }
}

/// A job on a device: its answer (taken out when it is cancelled) and how far the denoising
/// of its batch got.
pub(crate) struct RunningJob {
    pub device: usize,
    /// The job's time in the queues until its batch started.
    pub queued: Queued<Duration>,
    /// Denoising steps done (0 until the first is) of `total`.
    pub step: usize,
    pub total: usize,
}

pub(crate) struct PrepareState {
    pub jobs: VecDeque<Queued<headshot_core::GenerationJob>>,
    /// Jobs a prepare thread is working on: (seq, work).
    pub preparing: Vec<(u64, f64)>,
    /// Jobs cancelled while a prepare thread works on them; answered when it is done.
    pub cancelled: HashSet<u64>,
    /// No more jobs will be admitted; prepare threads drain what is left and exit.
    pub closed: bool,
}

pub(crate) struct QueueState {
    pub jobs: VecDeque<Queued<headshot_core::PreparedJob>>,
    /// No more jobs will come (the prepare stage is done, or every device thread stopped);
    /// device threads drain what is left and exit.
    pub closed: bool,
}

pub(crate) struct Shared {
    pub config: WorkerConfig,
    pub devices: usize,
    /// What the generators accept; the prepare stage refuses the other jobs.
    pub limits: JobLimits,
    pub admission: std::sync::Arc<Semaphore>,
    pub prepare: Mutex<PrepareState>,
    pub to_prepare: Condvar,
    pub queue: Mutex<QueueState>,
    pub available: Condvar,
    /// Jobs on a device, by seq; a job cancelled while running is taken out at once.
    pub running: Mutex<HashMap<u64, RunningJob>>,
    pub times: Mutex<Estimator>,
    pub next_seq: AtomicU64,
    /// Prepare threads still running; the last one out closes the device queue.
    pub live_preparers: AtomicUsize,
    /// Device threads still running; the last one out fails what is left.
    pub live_devices: AtomicUsize,
    /// Each device thread's generator, as it described itself at start.
    pub device_info: Vec<headshot_core::GeneratorInfo>,
    /// Each device thread's base models as its generator last reported them (at start and
    /// after every batch).
    pub device_model_sets: Vec<Mutex<Vec<headshot_core::ModelSetState>>>,
    /// Set to have the device thread unload its on-demand base models before its next batch.
    pub unload_requested: Vec<std::sync::atomic::AtomicBool>,
    /// Whether each device thread is still running (cleared by its exit guard).
    pub device_alive: Vec<std::sync::atomic::AtomicBool>,
    /// Admitted jobs not yet handed to the device queue (or answered by the prepare stage).
    pub in_prepare: AtomicUsize,
    /// Time device threads waited for work while admitted jobs were still being prepared.
    pub idle_with_work_nanos: AtomicU64,
    /// Device and prepare threads still running; shutdown waits for zero.
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

    /// Stops admission; the prepare threads drain their queue, then the device threads theirs.
    pub(crate) fn close(&self) {
        self.admission.close();
        lock(&self.prepare).closed = true;
        self.to_prepare.notify_all();
    }

    /// Tells the device threads that no more prepared jobs will come.
    pub(crate) fn close_device_queue(&self) {
        lock(&self.queue).closed = true;
        self.available.notify_all();
    }
}
