//! The device thread's model-set reports and unloads (`system_details`, `clear_cache`), with a
//! test double that "loads" a second base model when a job names it: the snapshot follows each
//! batch, and an unload asked for while a batch runs happens after it, never during it.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use headshot_core::{GenerationError, GenerationOutput, Generator, ModelSetState, PreparedJob};
use headshot_test_support::{job, ScriptedFaces};
use headshot_worker::{Stages, Worker, WorkerConfig, WorkerHandle};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

const DEFAULT: &str = "tiny";
const ON_DEMAND: &str = "fp32";

/// What the double saw, in order: `batch <model>` when a batch ends, `unload` when asked.
type Events = Arc<Mutex<Vec<String>>>;

struct TwoSets {
    on_demand_loaded: Mutex<bool>,
    events: Events,
    gate: Mutex<mpsc::Receiver<()>>,
    started: UnboundedSender<()>,
}

impl Generator for TwoSets {
    fn generate(&self, job: &PreparedJob) -> Result<GenerationOutput, GenerationError> {
        let _ = self.started.send(());
        self.gate
            .lock()
            .unwrap()
            .recv()
            .expect("test dropped the gate");
        let model = job.settings.model.model_id.as_deref().unwrap_or(DEFAULT);
        if model == ON_DEMAND {
            *self.on_demand_loaded.lock().unwrap() = true;
        }
        self.events.lock().unwrap().push(format!("batch {model}"));
        Ok(GenerationOutput { images: Vec::new() })
    }

    fn model_sets(&self) -> Vec<ModelSetState> {
        let loaded = *self.on_demand_loaded.lock().unwrap();
        vec![
            ModelSetState {
                id: DEFAULT.to_string(),
                is_default: true,
                loaded: true,
                bytes: Some(10),
            },
            ModelSetState {
                id: ON_DEMAND.to_string(),
                is_default: false,
                loaded,
                bytes: loaded.then_some(10),
            },
        ]
    }

    fn unload_model_sets(&self) -> Vec<String> {
        self.events.lock().unwrap().push("unload".to_string());
        let mut loaded = self.on_demand_loaded.lock().unwrap();
        let unloaded = if *loaded {
            vec![ON_DEMAND.to_string()]
        } else {
            Vec::new()
        };
        *loaded = false;
        unloaded
    }
}

fn spawn() -> (
    WorkerHandle,
    mpsc::Sender<()>,
    UnboundedReceiver<()>,
    Events,
) {
    let (gate, gate_rx) = mpsc::channel();
    let (started_tx, started) = unbounded_channel();
    let events = Events::default();
    let generator = TwoSets {
        on_demand_loaded: Mutex::new(false),
        events: events.clone(),
        gate: Mutex::new(gate_rx),
        started: started_tx,
    };
    let stages = Stages::new(Arc::new(ScriptedFaces::default()), Box::new(generator));
    let config = WorkerConfig {
        queue_size: 4,
        ..WorkerConfig::default()
    };
    (
        Worker::spawn(stages, config).unwrap(),
        gate,
        started,
        events,
    )
}

fn on_demand_loaded(worker: &WorkerHandle) -> bool {
    let status = worker.device_status();
    let sets = &status[0].model_sets;
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert!(sets[0].is_default && sets[0].loaded, "{sets:?}");
    sets[1].loaded
}

async fn until(worker: &WorkerHandle, loaded: bool) {
    for _ in 0..500 {
        if on_demand_loaded(worker) == loaded {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the on-demand set never became loaded={loaded}");
}

fn on_demand_job(seed: u64) -> headshot_core::GenerationJob {
    let mut job = job(seed);
    job.settings.model.model_id = Some(ON_DEMAND.to_string());
    job
}

#[tokio::test]
async fn the_snapshot_follows_batches_and_unloads_wait_for_the_running_batch() {
    let (worker, gate, mut started, events) = spawn();
    // Reported at start, before any job.
    assert!(!on_demand_loaded(&worker));
    // Nothing loaded on demand: nothing to name, and the idle device unloads nothing real.
    assert!(worker.unload_model_sets().is_empty());
    for _ in 0..500 {
        if !events.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *events.lock().unwrap(),
        ["unload"],
        "the idle device did not unload at once"
    );

    // A job of the on-demand set loads it; the snapshot says so after its batch.
    let first = worker.submit(on_demand_job(1)).unwrap();
    gate.send(()).unwrap();
    assert!(first.await.output.is_ok());
    until(&worker, true).await;

    // Asked while a batch runs: named at once, done only once that batch is over.
    started.recv().await.unwrap();
    let second = worker.submit(on_demand_job(2)).unwrap();
    started.recv().await.unwrap();
    assert_eq!(worker.unload_model_sets(), [ON_DEMAND]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(on_demand_loaded(&worker), "unloaded during the batch");
    gate.send(()).unwrap();
    assert!(second.await.output.is_ok());
    until(&worker, false).await;
    let seen = events.lock().unwrap().clone();
    let last_batch = seen.iter().rposition(|e| e == "batch fp32").unwrap();
    let last_unload = seen.iter().rposition(|e| e == "unload").unwrap();
    assert!(last_unload > last_batch, "{seen:?}");

    // Idle: at once, without any job.
    let third = worker.submit(on_demand_job(3)).unwrap();
    gate.send(()).unwrap();
    assert!(third.await.output.is_ok());
    until(&worker, true).await;
    assert_eq!(worker.unload_model_sets(), [ON_DEMAND]);
    until(&worker, false).await;
    // A default-set job afterwards runs as usual and loads nothing.
    let plain = worker.submit(job(4)).unwrap();
    gate.send(()).unwrap();
    assert!(plain.await.output.is_ok());
    assert!(!on_demand_loaded(&worker));
}
