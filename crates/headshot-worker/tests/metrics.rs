//! The worker reports queue and job metrics through the `metrics` facade. A tiny in-process
//! recorder (global, hence this separate test binary) captures what the device thread emits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use headshot_core::{
    GeneratedImage, GenerationError, GenerationOutput, Generator, PreparedJob, RgbImage,
};
use headshot_test_support::{job, ScriptedFaces, ScriptedGenerator, StepGate};
use headshot_worker::*;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

#[derive(Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.set(f64::from_bits(self.0.load(Ordering::SeqCst)) + value);
    }
    fn decrement(&self, value: f64) {
        self.set(f64::from_bits(self.0.load(Ordering::SeqCst)) - value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::SeqCst);
    }
}

/// Histograms count their samples.
impl HistogramFn for Cell {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Keyed by `name` or `name{label=value}`.
#[derive(Default)]
struct TestRecorder {
    cells: Mutex<HashMap<String, Arc<Cell>>>,
    described: Mutex<Vec<String>>,
}

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut name = key.name().to_string();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        if !labels.is_empty() {
            name = format!("{name}{{{}}}", labels.join(","));
        }
        self.cells.lock().unwrap().entry(name).or_default().clone()
    }

    fn value(&self, name: &str) -> u64 {
        self.cells
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.0.load(Ordering::SeqCst))
    }

    fn gauge(&self, name: &str) -> f64 {
        f64::from_bits(self.value(name))
    }
}

impl Recorder for &'static TestRecorder {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described
            .lock()
            .unwrap()
            .push(key.as_str().to_string());
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described
            .lock()
            .unwrap()
            .push(key.as_str().to_string());
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described
            .lock()
            .unwrap()
            .push(key.as_str().to_string());
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

fn recorder() -> &'static TestRecorder {
    static RECORDER: OnceLock<&'static TestRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let r: &'static TestRecorder = Box::leak(Box::default());
        metrics::set_global_recorder(r).expect("no other recorder in this test binary");
        r
    })
}

/// Fails seed 1 with an error, panics on seed 2, succeeds otherwise, after waiting for a token.
struct Gated(Mutex<std::sync::mpsc::Receiver<()>>);

impl Generator for Gated {
    fn generate(&self, job: &PreparedJob) -> Result<GenerationOutput, GenerationError> {
        self.0.lock().unwrap().recv().unwrap();
        match job.settings.seed {
            1 => Err(GenerationError::NoFace),
            2 => panic!("test panic"),
            _ => Ok(GenerationOutput {
                images: vec![GeneratedImage {
                    image: RgbImage {
                        width: 1,
                        height: 1,
                        pixels: vec![0; 3],
                    },
                    nsfw: false,
                }],
            }),
        }
    }
}

#[tokio::test]
async fn worker_reports_queue_and_job_metrics() {
    let rec = recorder();
    describe_metrics();
    for name in [
        METRIC_QUEUE_DEPTH,
        METRIC_JOB_DURATION,
        METRIC_BATCH_DURATION,
    ] {
        assert!(
            rec.described.lock().unwrap().iter().any(|d| d == name),
            "{name} not described"
        );
    }

    let (gate, rx) = std::sync::mpsc::channel();
    let worker = Worker::spawn(
        Stages::new(
            Arc::new(ScriptedFaces::default()),
            Box::new(Gated(Mutex::new(rx))),
        ),
        WorkerConfig {
            queue_size: 3,
            ..WorkerConfig::default()
        },
    )
    .unwrap();
    let tickets: Vec<_> = [1, 2, 3]
        .into_iter()
        .map(|s| worker.submit(job(s)).unwrap())
        .collect();
    assert_eq!(rec.gauge(METRIC_JOBS_IN_FLIGHT), 3.0);
    assert!(matches!(
        worker.submit(job(4)),
        Err(SubmitError::QueueFull { .. })
    ));

    for _ in 0..3 {
        gate.send(()).unwrap();
    }
    for ticket in tickets {
        ticket.await;
    }
    worker.shutdown().await;

    assert_eq!(
        rec.value(METRIC_JOB_DURATION),
        3,
        "one duration sample per job"
    );
    assert_eq!(rec.value(METRIC_QUEUE_WAIT), 3);
    assert_eq!(rec.value(METRIC_BATCH_SIZE), 3);
    assert_eq!(
        rec.value(&format!("{METRIC_JOBS_FINISHED}{{outcome=success}}")),
        1
    );
    assert_eq!(
        rec.value(&format!("{METRIC_JOBS_FINISHED}{{outcome=failed}}")),
        2
    );
    // One device-time sample per generator call (batches of one here), not one per job.
    assert_eq!(
        rec.value(METRIC_BATCH_DURATION),
        rec.value(METRIC_BATCH_SIZE)
    );
    assert_eq!(rec.value(METRIC_GENERATOR_PANICS), 1);
    assert_eq!(rec.gauge(METRIC_QUEUE_DEPTH), 0.0);
    assert_eq!(rec.gauge(METRIC_JOBS_IN_FLIGHT), 0.0);

    // Steps are counted as the observer hears of them; a cancel counts once, as cancelled.
    let steps = StepGate::closed();
    let generator = ScriptedGenerator {
        steps: Some(steps.clone()),
        ..Default::default()
    };
    let worker = Worker::spawn(
        Stages::new(Arc::new(ScriptedFaces::default()), Box::new(generator)),
        WorkerConfig::default(),
    )
    .unwrap();
    let mut stepped = job(5);
    stepped.settings.num_inference_steps = 3;
    let mut running = worker.submit(stepped).unwrap();
    assert!(running.started().await);
    let waiting = worker.submit(job(6)).unwrap();
    assert_eq!(worker.cancel(waiting.seq()), Cancelled::Waiting);
    waiting.await;
    steps.allow(3);
    assert!(running.await.output.is_ok());
    worker.shutdown().await;
    assert_eq!(rec.value(METRIC_DENOISE_STEPS), 3);
    assert_eq!(
        rec.value(&format!("{METRIC_JOBS_FINISHED}{{outcome=cancelled}}")),
        1
    );
    assert_eq!(
        rec.value(&format!("{METRIC_JOBS_FINISHED}{{outcome=success}}")),
        2
    );
}
