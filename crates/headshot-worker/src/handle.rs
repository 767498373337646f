//! The async face of the worker: spawning the stages' threads, admitting jobs, tickets,
//! estimates, shutdown.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use headshot_core::{FacePreparer, GenerationError, GenerationJob, GenerationOutput, Generator};
use tokio::sync::{oneshot, watch, Semaphore, TryAcquireError};

use crate::config::WorkerConfig;
use crate::error::{SubmitError, WorkerError};
use crate::eta::{work_of, Estimator};
use crate::metrics_names::*;
use crate::shared::{lock, PrepareState, QueueState, Queued, Shared};
use crate::{device, prepare};

// Where an admitted job is (see [`WorkerHandle::progress`]): a core type, since workers also
// report it to the other nodes through the shared queue.
pub use headshot_core::Progress;

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
    /// The identity (ArcFace embedding) the images were made for, for their likeness scores;
    /// `None` when the job never reached a device.
    pub identity: Option<Vec<f32>>,
    /// How many faces the job's photo shows (`None` when the job never reached a device).
    pub faces_found: Option<usize>,
    /// Each image's own noise seed, when it has one (best-of-N candidates; see
    /// `JobSettings::image_seeds`).
    pub image_seeds: Option<Vec<u64>>,
}

impl JobResult {
    pub(crate) fn worker_stopped() -> Self {
        JobResult {
            output: Err(GenerationError::internal(
                "the worker stopped before this job ran; submit it again",
            )),
            generation_time: Duration::ZERO,
            queue_wait: Duration::ZERO,
            batch_size: 0,
            identity: None,
            faces_found: None,
            image_seeds: None,
        }
    }

    pub(crate) fn cancelled() -> Self {
        JobResult {
            output: Err(GenerationError::Cancelled),
            generation_time: Duration::ZERO,
            queue_wait: Duration::ZERO,
            batch_size: 0,
            identity: None,
            faces_found: None,
            image_seeds: None,
        }
    }
}

/// What [`WorkerHandle::cancel`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// The job was waiting; it is taken out and will never run.
    Waiting,
    /// The job was running; it is answered now and its batch stops at the next denoising step
    /// unless other jobs of it still run (its images are then discarded).
    Running,
    /// No such job: already answered (or never admitted).
    NotFound,
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
    started: Option<oneshot::Receiver<()>>,
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

    /// Waits until a device thread starts the job: `true`, or `false` if it was answered
    /// without running (refused by the prepare stage, cancelled, worker stopped). Only the
    /// first call waits; later ones return `false` at once.
    pub async fn started(&mut self) -> bool {
        match self.started.take() {
            Some(started) => started.await.is_ok(),
            None => false,
        }
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

/// Closes the queue when the last [`WorkerHandle`] is dropped, so device threads drain and exit.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// The model work a worker drives: face analysis for the prepare pool, one generator per
/// device thread.
pub struct Stages {
    /// The prepare threads take turns over these (e.g. one per GPU when faces run on each).
    pub preparers: Vec<Arc<dyn FacePreparer>>,
    /// One device thread each, all fed by one device queue.
    pub generators: Vec<Box<dyn Generator>>,
}

impl Stages {
    /// One preparer and one device.
    pub fn new(preparer: Arc<dyn FacePreparer>, generator: Box<dyn Generator>) -> Self {
        Stages {
            preparers: vec![preparer],
            generators: vec![generator],
        }
    }
}

/// Starts workers.
pub struct Worker;

impl Worker {
    /// `config.prepare_threads` prepare threads (at least one per preparer) and one device
    /// thread per generator.
    pub fn spawn(stages: Stages, config: WorkerConfig) -> Result<WorkerHandle, WorkerError> {
        let Stages {
            preparers,
            generators,
        } = stages;
        if generators.is_empty() {
            return Err(WorkerError::NoGenerators);
        }
        if preparers.is_empty() {
            return Err(WorkerError::NoPreparers);
        }
        if config.queue_size == 0 {
            return Err(WorkerError::ZeroQueueSize);
        }
        let mut config = config;
        config.queue_size = config.queue_size.min(Semaphore::MAX_PERMITS);
        let prepare_threads = config.prepare_threads.max(preparers.len());
        // Every device runs the same model set, so one set of limits holds for all.
        let limits = generators[0].limits();
        let device_info: Vec<_> = generators.iter().map(|g| g.info()).collect();
        let shared = Arc::new(Shared {
            devices: generators.len(),
            device_alive: device_info
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(true))
                .collect(),
            // Asked here too, so a report right after start already has them.
            device_model_sets: generators
                .iter()
                .map(|g| Mutex::new(g.model_sets()))
                .collect(),
            unload_requested: device_info
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            device_info,
            limits,
            admission: Arc::new(Semaphore::new(config.queue_size)),
            prepare: Mutex::new(PrepareState {
                jobs: VecDeque::with_capacity(config.queue_size.min(1024)),
                preparing: Vec::new(),
                cancelled: HashSet::new(),
                closed: false,
            }),
            to_prepare: Condvar::new(),
            queue: Mutex::new(QueueState {
                jobs: VecDeque::with_capacity(config.queue_size.min(1024)),
                closed: false,
            }),
            available: Condvar::new(),
            running: Mutex::new(HashMap::new()),
            times: Mutex::new(Estimator::new(
                generators.len(),
                config.eta_window,
                config.initial_job_estimate,
            )),
            next_seq: AtomicU64::new(1),
            live_preparers: AtomicUsize::new(0),
            live_devices: AtomicUsize::new(0),
            in_prepare: AtomicUsize::new(0),
            idle_with_work_nanos: AtomicU64::new(0),
            live_threads: watch::channel(0).0,
            config,
        });
        let handle = WorkerHandle {
            owner: Arc::new(Owner {
                shared: shared.clone(),
            }),
        };
        for index in 0..prepare_threads {
            let faces = preparers[index % preparers.len()].clone();
            let thread_shared = shared.clone();
            spawn_thread(
                &shared,
                "prepare",
                index,
                &shared.live_preparers,
                move || prepare::run(thread_shared, faces, index),
            )?;
        }
        for (index, generator) in generators.into_iter().enumerate() {
            let thread_shared = shared.clone();
            spawn_thread(&shared, "device", index, &shared.live_devices, move || {
                device::run(thread_shared, generator, index)
            })?;
        }
        tracing::info!(
            name = %shared.config.name,
            devices = shared.devices,
            prepare_threads,
            queue_size = shared.config.queue_size,
            "worker started"
        );
        Ok(handle)
    }
}

/// Starts one stage thread, counted in `live` and in the threads shutdown waits for. On
/// failure the caller drops its handle, which closes the queues and lets started threads exit.
fn spawn_thread(
    shared: &Shared,
    stage: &str,
    index: usize,
    live: &AtomicUsize,
    body: impl FnOnce() + Send + 'static,
) -> Result<(), WorkerError> {
    let name = format!("{}-{stage}-{index}", shared.config.name);
    live.fetch_add(1, Ordering::AcqRel);
    shared.live_threads.send_modify(|n| *n += 1);
    match std::thread::Builder::new().name(name.clone()).spawn(body) {
        Ok(_) => Ok(()),
        Err(source) => {
            live.fetch_sub(1, Ordering::AcqRel);
            shared.live_threads.send_modify(|n| *n -= 1);
            Err(WorkerError::Spawn { name, source })
        }
    }
}

/// One device thread as [`WorkerHandle::device_status`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStatus {
    pub info: headshot_core::GeneratorInfo,
    /// Its base models and which are loaded, as of its last batch (empty for a generator with
    /// one fixed model set).
    pub model_sets: Vec<headshot_core::ModelSetState>,
    pub alive: bool,
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
                // Counted once, by the server that answers the refusal
                // (headshot_request_errors_total{kind="queue_full"}, early refusals included).
                return Err(SubmitError::QueueFull {
                    max: shared.config.queue_size,
                    retry_after: self.retry_after(),
                });
            }
            Err(TryAcquireError::Closed) => return Err(SubmitError::ShuttingDown),
        };
        let ahead = shared.in_flight().saturating_sub(1);
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let work = work_of(&job.settings);
        // A span per job, under the submitter's span (the request that made it).
        let span = tracing::info_span!("job", seq);
        let (reply, receiver) = oneshot::channel();
        let (started, started_receiver) = oneshot::channel();
        let eta = {
            let mut prepare = lock(&shared.prepare);
            if prepare.closed {
                return Err(SubmitError::ShuttingDown);
            }
            let ahead_work = work_ahead(&prepare, &lock(&shared.queue));
            let eta = lock(&shared.times).eta(ahead_work, work, Instant::now());
            prepare.jobs.push_back(Queued {
                seq,
                work,
                job,
                reply,
                admitted_at: Instant::now(),
                span: span.clone(),
                permit,
                started: Some(started),
            });
            shared.in_prepare.fetch_add(1, Ordering::AcqRel);
            eta
        };
        metrics::gauge!(METRIC_JOBS_IN_FLIGHT).set(shared.in_flight() as f64);
        shared.to_prepare.notify_one();
        span.in_scope(|| tracing::debug!(ahead, eta_s = eta.as_secs_f64(), "job admitted"));
        Ok(JobTicket {
            seq,
            position: ahead,
            eta,
            reply: receiver,
            started: Some(started_receiver),
        })
    }

    /// Estimated time until a reference job (512x512, 21 steps, one sample) submitted now
    /// would be done.
    pub fn eta_for_new_job(&self) -> Duration {
        let shared = self.shared();
        let prepare = lock(&shared.prepare);
        let ahead = work_ahead(&prepare, &lock(&shared.queue));
        let eta = lock(&shared.times).eta(ahead, 1.0, Instant::now());
        eta
    }

    /// Estimated time from now until job `seq` (see [`JobTicket::seq`]) is done: its place in
    /// the queues, or what is left of its running batch; zero once it has finished.
    pub fn eta_of(&self, seq: u64) -> Duration {
        self.progress(seq).map_or(Duration::ZERO, |p| p.eta())
    }

    /// Where job `seq` is: its place among the jobs not yet running, or the denoising step
    /// its batch reached; `None` once it was answered.
    pub fn progress(&self, seq: u64) -> Option<Progress> {
        let shared = self.shared();
        let prepare = lock(&shared.prepare);
        let queue = lock(&shared.queue);
        let now = Instant::now();
        let mut ahead = 0.0;
        for (position, (queued, work)) in waiting(&prepare, &queue).enumerate() {
            if queued == seq {
                let eta = lock(&shared.times).eta(ahead, work, now);
                return Some(Progress::Waiting { position, eta });
            }
            ahead += work;
        }
        let (step, total) = {
            let running = lock(&shared.running);
            let job = running.get(&seq)?;
            (job.step, job.total)
        };
        let eta = lock(&shared.times).running_eta(seq, now);
        Some(Progress::Running {
            step,
            total,
            eta: eta.unwrap_or(Duration::ZERO),
        })
    }

    /// Cancels job `seq`: taken out of its queue if it waits (answered now with
    /// `GenerationError::Cancelled`; one being analysed is answered when that ends), or, if it
    /// runs, answered now while its batch stops at the next step once none of its jobs is left.
    pub fn cancel(&self, seq: u64) -> Cancelled {
        self.cancel_where(seq, true)
    }

    /// Cancels job `seq` only if it is not running yet; whether it did.
    pub fn cancel_waiting(&self, seq: u64) -> bool {
        self.cancel_where(seq, false) == Cancelled::Waiting
    }

    fn cancel_where(&self, seq: u64, running_too: bool) -> Cancelled {
        let shared = self.shared();
        let outcome = self.take_cancelled(seq, running_too);
        metrics::gauge!(METRIC_JOBS_IN_FLIGHT).set(shared.in_flight() as f64);
        outcome
    }

    /// Takes job `seq` out wherever it is and answers it as cancelled. With `running_too`
    /// false a running job is left alone (the answer is then `Running`, nothing changed).
    fn take_cancelled(&self, seq: u64, running_too: bool) -> Cancelled {
        let shared = self.shared();
        let mut prepare = lock(&shared.prepare);
        if let Some(at) = prepare.jobs.iter().position(|q| q.seq == seq) {
            if let Some(queued) = prepare.jobs.remove(at) {
                shared.in_prepare.fetch_sub(1, Ordering::AcqRel);
                drop(prepare);
                queued.cancel();
                return Cancelled::Waiting;
            }
        }
        if prepare.preparing.iter().any(|(s, _)| *s == seq) {
            prepare.cancelled.insert(seq);
            return Cancelled::Waiting;
        }
        let mut queue = lock(&shared.queue);
        if let Some(at) = queue.jobs.iter().position(|q| q.seq == seq) {
            if let Some(queued) = queue.jobs.remove(at) {
                metrics::gauge!(METRIC_QUEUE_DEPTH).set(queue.jobs.len() as f64);
                drop((queue, prepare));
                queued.cancel();
                return Cancelled::Waiting;
            }
        }
        let mut running = lock(&shared.running);
        if !running.contains_key(&seq) {
            return Cancelled::NotFound;
        }
        if !running_too {
            return Cancelled::Running;
        }
        let Some(job) = running.remove(&seq) else {
            return Cancelled::NotFound;
        };
        drop((running, queue, prepare));
        job.queued.cancel();
        Cancelled::Running
    }

    /// When a queue slot is expected to free up (the rate-limit answer's `retry_after`).
    pub fn retry_after(&self) -> Duration {
        let shared = self.shared();
        let prepare = lock(&shared.prepare);
        let queue = lock(&shared.queue);
        let next = waiting(&prepare, &queue).next().map(|(_, work)| work);
        let after = lock(&shared.times).retry_after(next);
        after
    }

    /// How long device threads have waited for work, in all, while admitted jobs were still
    /// being prepared (face analysis); the separate prepare stage keeps this small.
    pub fn device_idle_with_work(&self) -> Duration {
        Duration::from_nanos(self.shared().idle_with_work_nanos.load(Ordering::Relaxed))
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

    /// Jobs admitted and not yet running: being prepared or waiting for a device thread.
    pub fn queue_depth(&self) -> usize {
        let shared = self.shared();
        let prepare = lock(&shared.prepare);
        let depth = waiting(&prepare, &lock(&shared.queue)).count();
        depth
    }

    /// Prepared jobs waiting for a device thread.
    pub fn waiting_for_device(&self) -> usize {
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

    /// Device threads still running (fewer than [`Self::devices`] only after a thread died or
    /// after shutdown).
    pub fn live_devices(&self) -> usize {
        self.shared().live_devices.load(Ordering::Acquire)
    }

    /// Each device thread: what its generator runs on and whether the thread still runs.
    pub fn device_status(&self) -> Vec<DeviceStatus> {
        let shared = self.shared();
        shared
            .device_info
            .iter()
            .zip(&shared.device_alive)
            .zip(&shared.device_model_sets)
            .map(|((info, alive), model_sets)| DeviceStatus {
                info: info.clone(),
                model_sets: lock(model_sets).clone(),
                alive: alive.load(Ordering::Acquire),
            })
            .collect()
    }

    /// Asks every device thread to unload the base models it loaded on demand: an idle one
    /// does so at once, a busy one after its batch. Returns the ids loaded now (as of each
    /// device's last batch), once each.
    pub fn unload_model_sets(&self) -> Vec<String> {
        let shared = self.shared();
        let mut loaded: Vec<String> = Vec::new();
        for (states, flag) in shared
            .device_model_sets
            .iter()
            .zip(&shared.unload_requested)
        {
            for state in lock(states).iter().filter(|s| s.loaded && !s.is_default) {
                if !loaded.contains(&state.id) {
                    loaded.push(state.id.clone());
                }
            }
            flag.store(true, Ordering::Release);
        }
        // Under the queue lock, so a device thread between its check and its wait sees it.
        let _queue = lock(&shared.queue);
        shared.available.notify_all();
        loaded
    }

    /// Prepare threads still running.
    pub fn live_preparers(&self) -> usize {
        self.shared().live_preparers.load(Ordering::Acquire)
    }

    /// Stops admitting jobs, lets the stages finish every admitted job, and waits until their
    /// threads have exited (and dropped their generators). Safe to call from several clones.
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

/// Admitted jobs not yet running, as `(seq, work)` in the order they will run: prepared ones
/// waiting for a device, those being prepared, those waiting to be prepared.
fn waiting<'a>(
    prepare: &'a PrepareState,
    queue: &'a QueueState,
) -> impl Iterator<Item = (u64, f64)> + 'a {
    queue
        .jobs
        .iter()
        .map(|q| (q.seq, q.work))
        .chain(prepare.preparing.iter().copied())
        .chain(prepare.jobs.iter().map(|q| (q.seq, q.work)))
}

/// Work (in reference jobs) ahead of a new job: everything admitted and not yet running.
fn work_ahead(prepare: &PrepareState, queue: &QueueState) -> f64 {
    waiting(prepare, queue).map(|(_, work)| work).sum()
}
