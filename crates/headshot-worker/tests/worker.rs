//! Behaviour of the queue and device threads, driven by test-double generators.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use headshot_core::{
    GeneratedImage, GenerationError, GenerationJob, GenerationOutput, Generator, JobSettings,
    PreparedJob, RgbImage,
};
use headshot_test_support::{job, seed_of, ScriptedFaces};
use headshot_worker::{Stages, SubmitError, Worker, WorkerConfig, WorkerError, WorkerHandle};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Seeds that make the double misbehave.
const PANIC_SEED: u64 = 666;
const NO_FACE_SEED: u64 = 13;

/// A job whose settings differ from the reference ones by `change`.
fn job_with(seed: u64, change: impl FnOnce(&mut JobSettings)) -> GenerationJob {
    let mut job = job(seed);
    change(&mut job.settings);
    job
}

/// One 1x1 image per sample whose pixel encodes the job's seed, so each answer can be traced
/// back to the job that asked for it.
fn render(job: &JobSettings) -> GenerationOutput {
    let pixel = [
        job.seed as u8,
        (job.seed >> 8) as u8,
        (job.seed >> 16) as u8,
    ];
    GenerationOutput {
        images: (0..job.samples)
            .map(|_| GeneratedImage {
                image: RgbImage {
                    width: 1,
                    height: 1,
                    pixels: pixel.to_vec(),
                },
                nsfw: false,
            })
            .collect(),
    }
}

/// A generator that records every batch it is given, can be held at a gate (each call waits
/// for a token) and reports when a call starts.
struct Double {
    max_batch: usize,
    batches: Arc<Mutex<Vec<Vec<u64>>>>,
    gate: Option<Mutex<mpsc::Receiver<()>>>,
    started: UnboundedSender<Vec<u64>>,
    dropped: Arc<AtomicBool>,
}

struct Controls {
    batches: Arc<Mutex<Vec<Vec<u64>>>>,
    gate: Option<mpsc::Sender<()>>,
    started: UnboundedReceiver<Vec<u64>>,
    dropped: Arc<AtomicBool>,
}

impl Controls {
    fn open_gate(&self, calls: usize) {
        let gate = self.gate.as_ref().expect("double has no gate");
        for _ in 0..calls {
            gate.send(()).unwrap();
        }
    }

    async fn next_started(&mut self) -> Vec<u64> {
        self.started.recv().await.expect("generator gone")
    }

    fn batches(&self) -> Vec<Vec<u64>> {
        self.batches.lock().unwrap().clone()
    }
}

fn double(max_batch: usize, gated: bool) -> (Box<dyn Generator>, Controls) {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let (gate_tx, gate_rx) = mpsc::channel();
    let (started_tx, started_rx) = unbounded_channel();
    let dropped = Arc::new(AtomicBool::new(false));
    let generator = Double {
        max_batch,
        batches: batches.clone(),
        gate: gated.then(|| Mutex::new(gate_rx)),
        started: started_tx,
        dropped: dropped.clone(),
    };
    let controls = Controls {
        batches,
        gate: gated.then_some(gate_tx),
        started: started_rx,
        dropped,
    };
    (Box::new(generator), controls)
}

impl Double {
    fn enter(&self, seeds: Vec<u64>) {
        self.batches.lock().unwrap().push(seeds.clone());
        let _ = self.started.send(seeds);
        if let Some(gate) = &self.gate {
            gate.lock().unwrap().recv().expect("test dropped the gate");
        }
    }

    fn one(job: &PreparedJob) -> Result<GenerationOutput, GenerationError> {
        let job = &job.settings;
        match job.seed {
            PANIC_SEED => panic!("kaboom in job {}", job.seed),
            NO_FACE_SEED => Err(GenerationError::NoFace),
            _ => Ok(render(job)),
        }
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

impl Generator for Double {
    fn generate(&self, job: &PreparedJob) -> Result<GenerationOutput, GenerationError> {
        self.enter(vec![job.settings.seed]);
        Self::one(job)
    }

    fn generate_batch(
        &self,
        jobs: &[PreparedJob],
    ) -> Vec<Result<GenerationOutput, GenerationError>> {
        self.enter(jobs.iter().map(|j| j.settings.seed).collect());
        jobs.iter().map(Self::one).collect()
    }

    fn max_batch_images(&self) -> usize {
        self.max_batch
    }
}

fn config(queue_size: usize) -> WorkerConfig {
    WorkerConfig {
        queue_size,
        ..WorkerConfig::default()
    }
}

fn stages(generator: Box<dyn Generator>) -> Stages {
    Stages::new(Arc::new(ScriptedFaces::default()), generator)
}

fn spawn(max_batch: usize, gated: bool, queue_size: usize) -> (WorkerHandle, Controls) {
    let (generator, controls) = double(max_batch, gated);
    (
        Worker::spawn(stages(generator), config(queue_size)).unwrap(),
        controls,
    )
}

#[tokio::test]
async fn results_reach_the_job_that_asked() {
    let (worker, _controls) = spawn(1, false, 8);
    let tickets: Vec<_> = (1..=5).map(|s| worker.submit(job(s)).unwrap()).collect();
    for (seed, ticket) in (1..=5).zip(tickets) {
        let result = ticket.await;
        let output = result.output.expect("job should succeed");
        assert_eq!(seed_of(&output), seed);
        assert_eq!(result.batch_size, 1);
    }
    assert_eq!(worker.in_flight(), 0);
}

#[tokio::test]
async fn full_queue_rejects_with_its_size_and_frees_as_jobs_finish() {
    let (worker, mut controls) = spawn(1, true, 2);
    let first = worker.submit(job(1)).unwrap();
    assert_eq!(controls.next_started().await, [1]);
    let second = worker.submit(job(2)).unwrap();
    assert_eq!(second.position(), 1);

    match worker.submit(job(3)) {
        Err(SubmitError::QueueFull { max, .. }) => assert_eq!(max, 2),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    let message = worker.submit(job(3)).unwrap_err().to_string();
    assert_eq!(
        message,
        "Rate limit exceeded. Maximum 2 queued requests allowed."
    );

    controls.open_gate(1);
    assert_eq!(seed_of(&first.await.output.unwrap()), 1);
    // The finished job's slot is free again.
    let third = worker.submit(job(3)).unwrap();
    controls.open_gate(2);
    assert_eq!(seed_of(&second.await.output.unwrap()), 2);
    assert_eq!(seed_of(&third.await.output.unwrap()), 3);
}

#[tokio::test]
async fn a_panicking_job_fails_and_the_worker_lives_on() {
    let (worker, _controls) = spawn(1, false, 4);
    let boom = worker.submit(job(PANIC_SEED)).unwrap();
    let next = worker.submit(job(7)).unwrap();
    match boom.await.output {
        Err(GenerationError::Internal { message, .. }) => {
            assert!(
                message.contains("panicked") && message.contains("kaboom"),
                "{message}"
            )
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
    assert_eq!(seed_of(&next.await.output.unwrap()), 7);
    // And it keeps taking new work.
    assert_eq!(
        seed_of(&worker.submit(job(8)).unwrap().await.output.unwrap()),
        8
    );
}

#[tokio::test]
async fn a_panic_inside_a_batch_fails_only_the_culprit() {
    let (worker, mut controls) = spawn(4, true, 8);
    let blocker = worker.submit(job(1)).unwrap();
    assert_eq!(controls.next_started().await, [1]);
    let tickets: Vec<_> = [2, PANIC_SEED, 3]
        .into_iter()
        .map(|s| worker.submit(job(s)).unwrap())
        .collect();
    settled(&worker, 3).await;
    // The blocker, the panicking batch, then the three jobs retried one by one.
    controls.open_gate(5);
    assert!(blocker.await.output.is_ok());
    let outcomes: Vec<_> = futures_join(tickets).await;
    assert_eq!(seed_of(outcomes[0].output.as_ref().unwrap()), 2);
    assert!(matches!(
        outcomes[1].output,
        Err(GenerationError::Internal { .. })
    ));
    assert_eq!(seed_of(outcomes[2].output.as_ref().unwrap()), 3);
    assert_eq!(
        controls.batches(),
        vec![
            vec![1],
            vec![2, PANIC_SEED, 3],
            vec![2],
            vec![PANIC_SEED],
            vec![3]
        ]
    );
}

#[tokio::test]
async fn an_error_job_fails_with_its_error() {
    let (worker, _controls) = spawn(1, false, 4);
    let result = worker.submit(job(NO_FACE_SEED)).unwrap().await;
    assert_eq!(result.output, Err(GenerationError::NoFace));
    assert!(worker.submit(job(5)).unwrap().await.output.is_ok());
}

#[tokio::test]
async fn batches_group_compatible_jobs_only() {
    let (worker, mut controls) = spawn(4, true, 16);
    let blocker = worker.submit(job(1)).unwrap();
    assert_eq!(controls.next_started().await, [1]);

    let tall = job_with(2, |s| s.height = 768);
    let two_samples = job_with(3, |s| s.samples = 2);
    let unguided = job_with(4, |s| s.guidance_scale = 1.0);
    let more_steps = job_with(5, |s| s.num_inference_steps = 31);
    let jobs = vec![
        tall,
        two_samples,
        unguided,
        more_steps,
        job(6),
        job(7),
        job(8),
    ];
    let tickets: Vec<_> = jobs
        .into_iter()
        .map(|j| worker.submit(j).unwrap())
        .collect();
    settled(&worker, 7).await;
    controls.open_gate(16);
    assert!(blocker.await.output.is_ok());
    let results = futures_join(tickets).await;
    assert!(results.iter().all(|r| r.output.is_ok()));

    // Oldest first: 2 (768 tall) alone; then 3 (2 images) with 6 and 7 fills 4 images;
    // 4 (no CFG) and 5 (31 steps) alone; 8 last.
    assert_eq!(
        controls.batches(),
        vec![vec![1], vec![2], vec![3, 6, 7], vec![4], vec![5], vec![8]]
    );
    let sizes: Vec<usize> = results.iter().map(|r| r.batch_size).collect();
    assert_eq!(sizes, [1, 3, 1, 1, 3, 3, 1]);
}

#[tokio::test]
async fn without_batching_jobs_run_in_submission_order() {
    let (worker, mut controls) = spawn(1, true, 16);
    let blocker = worker.submit(job(100)).unwrap();
    assert_eq!(controls.next_started().await, [100]);
    let tickets: Vec<_> = (1..=10).map(|s| worker.submit(job(s)).unwrap()).collect();
    let positions: Vec<usize> = tickets.iter().map(|t| t.position()).collect();
    assert_eq!(positions, (1..=10).collect::<Vec<_>>());
    // ETA grows with the position in the queue.
    assert!(tickets.windows(2).all(|w| w[0].eta() < w[1].eta()));
    settled(&worker, 10).await;
    controls.open_gate(11);
    blocker.await;
    futures_join(tickets).await;
    let order: Vec<u64> = controls.batches().into_iter().flatten().collect();
    assert_eq!(order, [100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
}

#[tokio::test]
async fn eta_uses_the_initial_guess_then_measured_times() {
    let (generator, _controls) = double(1, false);
    let cfg = WorkerConfig {
        queue_size: 4,
        initial_job_estimate: Duration::from_secs(1000),
        ..WorkerConfig::default()
    };
    let worker = Worker::spawn(stages(generator), cfg).unwrap();
    assert_eq!(worker.eta_for_new_job(), Duration::from_secs(1000));
    worker.submit(job(1)).unwrap().await;
    // The double answers far faster than the guess, and the estimate follows it.
    assert!(worker.average_job_time() < Duration::from_secs(1000));
    assert_eq!(worker.eta_for_new_job(), worker.average_job_time());
}

#[tokio::test]
async fn shutdown_drains_admitted_jobs_then_refuses_new_ones() {
    let (worker, mut controls) = spawn(1, true, 8);
    let tickets: Vec<_> = (1..=4).map(|s| worker.submit(job(s)).unwrap()).collect();
    assert_eq!(controls.next_started().await, [1]);

    let stopper = worker.clone();
    let stopping = tokio::spawn(async move { stopper.shutdown().await });
    // Give the shutdown task a chance to close admission; it cannot finish while jobs wait.
    while !worker.is_closed() {
        tokio::task::yield_now().await;
    }
    controls.open_gate(4);
    let results = futures_join(tickets).await;
    let seeds: Vec<u64> = results
        .iter()
        .map(|r| seed_of(r.output.as_ref().unwrap()))
        .collect();
    assert_eq!(seeds, [1, 2, 3, 4]);
    stopping.await.unwrap();
    assert!(
        controls.dropped.load(Ordering::SeqCst),
        "generator not dropped after shutdown"
    );
    assert_eq!(
        worker.submit(job(5)).unwrap_err(),
        SubmitError::ShuttingDown
    );
}

#[tokio::test]
async fn dropping_every_handle_stops_the_thread() {
    let (worker, controls) = spawn(1, false, 2);
    assert!(worker.submit(job(1)).unwrap().await.output.is_ok());
    drop(worker);
    // The thread notices the closed queue and drops its generator.
    for _ in 0..1000 {
        if controls.dropped.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the device thread did not stop after its handles were dropped");
}

#[tokio::test]
async fn several_devices_share_one_queue() {
    let (a, mut ca) = double(1, true);
    let (b, mut cb) = double(1, true);
    let faces = Arc::new(ScriptedFaces::default());
    let stages = Stages {
        preparers: vec![faces],
        generators: vec![a, b],
    };
    let worker = Worker::spawn(stages, config(8)).unwrap();
    assert_eq!(worker.devices(), 2);
    let first = worker.submit(job(1)).unwrap();
    let second = worker.submit(job(2)).unwrap();
    // Both devices are busy at once, one job each.
    let mut started = vec![ca.next_started().await, cb.next_started().await];
    started.sort();
    assert_eq!(started, [vec![1], vec![2]]);
    ca.open_gate(1);
    cb.open_gate(1);
    assert_eq!(seed_of(&first.await.output.unwrap()), 1);
    assert_eq!(seed_of(&second.await.output.unwrap()), 2);
}

#[test]
fn bad_configs_are_refused() {
    let (g, _c) = double(1, false);
    assert!(matches!(
        Worker::spawn(stages(g), config(0)),
        Err(WorkerError::ZeroQueueSize)
    ));
    assert!(matches!(
        Worker::spawn(
            Stages {
                preparers: vec![Arc::new(ScriptedFaces::default())],
                generators: Vec::new()
            },
            config(1)
        ),
        Err(WorkerError::NoGenerators)
    ));
    let (g, _c) = double(1, false);
    assert!(matches!(
        Worker::spawn(
            Stages {
                preparers: Vec::new(),
                generators: vec![g]
            },
            config(1)
        ),
        Err(WorkerError::NoPreparers)
    ));
}

/// Waits until `n` jobs are prepared and waiting for the (held) device, so the batches the
/// test expects do not depend on how fast the prepare threads were.
async fn settled(worker: &WorkerHandle, n: usize) {
    for _ in 0..3000 {
        if worker.waiting_for_device() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} jobs were never prepared");
}

/// Awaits tickets in order (no `futures` dependency needed for this).
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.await);
    }
    out
}

#[tokio::test]
async fn batch_wait_collects_jobs_that_arrive_shortly_after() {
    let (generator, controls) = double(2, false);
    let cfg = WorkerConfig {
        queue_size: 4,
        // Long enough that the second job always arrives within it; the wait ends as soon as
        // the batch is full, so the test does not sit it out.
        batch_wait: Duration::from_secs(30),
        ..WorkerConfig::default()
    };
    let worker = Worker::spawn(stages(generator), cfg).unwrap();
    let first = worker.submit(job(1)).unwrap();
    tokio::task::yield_now().await;
    let second = worker.submit(job(2)).unwrap();
    assert_eq!(first.await.batch_size, 2);
    assert_eq!(second.await.batch_size, 2);
    assert_eq!(controls.batches(), vec![vec![1, 2]]);
}

#[tokio::test]
async fn shutdown_cuts_a_batch_wait_short() {
    let (generator, controls) = double(4, false);
    let cfg = WorkerConfig {
        queue_size: 4,
        batch_wait: Duration::from_secs(3600),
        ..WorkerConfig::default()
    };
    let worker = Worker::spawn(stages(generator), cfg).unwrap();
    let lone = worker.submit(job(1)).unwrap();
    worker.shutdown().await;
    assert_eq!(seed_of(&lone.await.output.unwrap()), 1);
    assert_eq!(controls.batches(), vec![vec![1]]);
}

#[tokio::test]
async fn queue_full_suggests_retrying_after_one_job_time() {
    let (generator, mut controls) = double(1, true);
    let cfg = WorkerConfig {
        queue_size: 1,
        initial_job_estimate: Duration::from_secs(42),
        ..WorkerConfig::default()
    };
    let worker = Worker::spawn(stages(generator), cfg).unwrap();
    let running = worker.submit(job(1)).unwrap();
    assert_eq!(controls.next_started().await, [1]);
    assert_eq!(
        worker.submit(job(2)).unwrap_err(),
        SubmitError::QueueFull {
            max: 1,
            retry_after: Duration::from_secs(42)
        }
    );
    controls.open_gate(1);
    running.await;
}

#[tokio::test]
async fn a_ticket_outlives_a_timed_out_wait() {
    // The server's pattern: wait a while, answer `processing`, finish in the background.
    let (worker, mut controls) = spawn(1, true, 2);
    let mut ticket = worker.submit(job(5)).unwrap();
    assert_eq!(controls.next_started().await, [5]);
    // The gate is closed, so this wait cannot end with a result.
    let waited = tokio::time::timeout(Duration::from_millis(1), &mut ticket).await;
    assert!(waited.is_err());
    let background = tokio::spawn(ticket);
    controls.open_gate(1);
    assert_eq!(seed_of(&background.await.unwrap().output.unwrap()), 5);
}

#[tokio::test]
async fn estimates_follow_the_work_queued_not_the_job_count() {
    let (generator, mut controls) = double(1, true);
    let cfg = WorkerConfig {
        queue_size: 3,
        initial_job_estimate: Duration::from_secs(10),
        ..WorkerConfig::default()
    };
    let worker = Worker::spawn(stages(generator), cfg).unwrap();
    // A 512x768, 42-step job is three reference jobs (512x512, 21 steps) of work.
    let mut big = job(1);
    big.settings.height = 768;
    big.settings.num_inference_steps = 42;
    let running = worker.submit(big.clone()).unwrap();
    assert_eq!(running.eta(), Duration::from_secs(30));
    assert_eq!(controls.next_started().await, [1]);
    let mut small = job(2);
    small.settings.width = 256;
    small.settings.height = 256;
    let behind_big = worker.submit(small.clone()).unwrap();
    assert!(
        behind_big.eta() > Duration::from_secs(20),
        "{:?}",
        behind_big.eta()
    );
    assert!(behind_big.eta() <= Duration::from_millis(32_500));
    let behind_both = worker.submit(big).unwrap();
    assert!(behind_both.eta() > behind_big.eta() + Duration::from_secs(29));
    // Full: a slot frees when the running 30-second batch ends.
    assert_eq!(
        worker.submit(job(3)).unwrap_err(),
        SubmitError::QueueFull {
            max: 3,
            retry_after: Duration::from_secs(30)
        }
    );
    assert!(worker.eta_of(behind_both.seq()) > worker.eta_of(behind_big.seq()));
    controls.open_gate(3);
    running.await;
    behind_big.await;
    behind_both.await;
    // Measured now (the double is far faster than the guess).
    assert!(worker.average_job_time() < Duration::from_secs(10));
}
