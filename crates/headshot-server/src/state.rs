//! Everything a request handler needs, built once at start-up.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use headshot_core::queue::JobQueue;
use headshot_core::store::{JobStore, OutputStore, StoreError};
use headshot_core::wire::TextLimits;
use headshot_core::LikenessScorer;
use headshot_store::{
    LocalDiskOutputStore, QueueConfig, RedbJobStore, RedisConfig, RedisJobQueue, RedisJobStore,
};
use headshot_worker::{Stages, Worker, WorkerConfig, WorkerError, WorkerHandle};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::auth::ApiKeys;
use crate::cluster::Role;
use crate::config::Config;
use crate::connections::ConnectionLimits;
use crate::face_image::FaceImageLimits;
use crate::finish::JobContext;
use crate::intake::BodyIntake;
use crate::net::{FetchError, GuardedHttp, OutboundLimits};
use crate::pull::spawn_pull_loop;
use crate::recovery::recover;
use crate::request_context::CorsPolicy;
use crate::urls::PublicUrls;
use crate::webhooks::WebhookPolicy;

/// Name of the job-store secret API keys are fingerprinted with.
const KEY_FINGERPRINT_SECRET: &str = "api-key-fingerprint";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("no API keys configured: pass --api-keys (or HEADSHOT_API_KEYS), or --no-auth to accept any request")]
    NoApiKeys,
    #[error("could not open the stores: {0}")]
    Store(#[from] StoreError),
    #[error("could not start the worker: {0}")]
    Worker(#[from] WorkerError),
    #[error("could not set up outbound HTTP: {0}")]
    Http(#[from] FetchError),
    #[error("{0}")]
    Cluster(String),
    #[error("could not list the LoRA folder (--lora-dir): {0}")]
    Loras(#[from] headshot_pipeline::LoraFolderError),
}

/// The job and output stores the server uses, and the shared job queue when there is one.
#[derive(Clone)]
pub struct Stores {
    pub jobs: Arc<dyn JobStore>,
    pub outputs: Arc<dyn OutputStore>,
    /// `Some` with `--redis-url`: jobs go through it to whichever worker claims them.
    pub queue: Option<SharedQueue>,
}

/// The shared job queue and the model set whose stream this node adds to or takes from.
#[derive(Clone)]
pub struct SharedQueue {
    pub queue: Arc<dyn JobQueue>,
    pub model_set: String,
}

impl Stores {
    /// The single-binary default: PNG/.base64 files in `{data_dir}/outputs`, job records in the
    /// embedded database `{data_dir}/jobs.redb`.
    pub fn open_local(data_dir: &Path, output_ttl: Duration) -> Result<Self, StoreError> {
        let outputs = LocalDiskOutputStore::open(data_dir.join("outputs"), output_ttl)?;
        Self::open_with_outputs(data_dir, Arc::new(outputs))
    }

    /// The stores `config` names: outputs from `--output-store` (local disk or S3); job records
    /// and the job queue in Redis with `--redis-url`, else records in `{data_dir}/jobs.redb`
    /// and no shared queue.
    pub fn open(config: &Config) -> Result<Self, StoreError> {
        let outputs = config.outputs.open(&config.data_dir, config.output_ttl())?;
        let cluster = &config.cluster;
        let Some(url) = &cluster.redis_url else {
            return Self::open_with_outputs(&config.data_dir, outputs);
        };
        let redis = RedisConfig::new(url.clone());
        let jobs = RedisJobStore::open(&redis)?;
        let mut queue = QueueConfig::new([cluster.model_set_name.clone()]);
        queue.max_queued = config.queue_size.max(1) as u64;
        queue.visibility_timeout = cluster.claim_timeout();
        queue.max_deliveries = cluster.max_deliveries;
        let queue = RedisJobQueue::open(&redis, queue)?;
        Ok(Stores {
            jobs: Arc::new(jobs),
            outputs,
            queue: Some(SharedQueue {
                queue: Arc::new(queue),
                model_set: cluster.model_set_name.clone(),
            }),
        })
    }

    fn open_with_outputs(
        data_dir: &Path,
        outputs: Arc<dyn OutputStore>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.display().to_string(),
            source,
        })?;
        let jobs = RedbJobStore::open(data_dir.join("jobs.redb"))?;
        Ok(Stores {
            jobs: Arc::new(jobs),
            outputs,
            queue: None,
        })
    }
}

/// Request-time settings derived from [`Config`].
#[derive(Clone, Debug)]
pub struct Settings {
    pub sync_wait: Duration,
    pub face_image: FaceImageLimits,
    pub record_ttl: Duration,
    pub output_ttl: Duration,
    /// Largest accepted request body (a base64 face image plus the other fields).
    pub max_body_bytes: usize,
    pub connections: ConnectionLimits,
    pub text_limits: TextLimits,
    /// A job's expected time before any has run (`--initial-eta-secs`): the ETA and retry
    /// hints of a node that queues for others.
    pub initial_job_estimate: Duration,
    /// `--queue-size`: the shared backlog's cap on a node that queues for others.
    pub queue_cap: usize,
    /// The model sets (`--models`, `--model-set`) and LoRAs (`--lora-dir`, listed at
    /// start-up) requests may name.
    pub served: crate::served_models::ServedModels,
}

pub struct Inner {
    pub settings: Settings,
    pub keys: ApiKeys,
    pub intake: BodyIntake,
    /// This node's worker (`None` on an API node, `--role api`).
    pub worker: Option<WorkerHandle>,
    /// The shared queue jobs go through (`--redis-url`); `None`: straight to `worker`.
    pub queue: Option<SharedQueue>,
    pub role: Role,
    /// Cancelled at SIGTERM: no new submits, and the pull loop claims no more jobs.
    pub draining: tokio_util::sync::CancellationToken,
    /// The pull loop (a worker beside a shared queue); the drain waits for it.
    pub pulling: tokio_util::task::TaskTracker,
    pub jobs: JobContext,
    pub metrics: PrometheusHandle,
    pub cors: CorsPolicy,
    /// When this state was built (models were loaded before): `system_details`' uptime.
    pub started: std::time::Instant,
}

/// Shared state of the router; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Draining (after SIGTERM): submits are refused.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled() || self.worker.as_ref().is_some_and(|w| w.is_closed())
    }

    /// Starts the worker around the model `stages` (prepare pool, one device thread per
    /// generator) and, inside a tokio runtime, runs again the jobs a previous run left
    /// unfinished (before any new one), resumes pending webhooks and starts the expiry sweep.
    ///
    /// `likeness` scores every output against the input face in the finish stage (the face
    /// analyzer); `None` leaves `face_similarity` out of the answers.
    pub fn new(
        config: &Config,
        stages: Stages,
        stores: Stores,
        likeness: Option<Arc<dyn LikenessScorer>>,
    ) -> Result<Self, StartupError> {
        Self::for_role(config, Some(stages), stores, likeness)
    }

    /// [`AppState::new`] for any `--role`: an API node (`stages` None) runs no worker and only
    /// queues; a node that generates beside a shared queue also pulls from it.
    pub fn for_role(
        config: &Config,
        stages: Option<Stages>,
        stores: Stores,
        likeness: Option<Arc<dyn LikenessScorer>>,
    ) -> Result<Self, StartupError> {
        let role = config.cluster.role;
        config.cluster.check().map_err(StartupError::Cluster)?;
        if role.generates() != stages.is_some() {
            return Err(StartupError::Cluster(format!(
                "role {role:?} {} models",
                if role.generates() {
                    "needs"
                } else {
                    "loads no"
                }
            )));
        }
        if role != Role::All && stores.queue.is_none() {
            return Err(StartupError::Cluster(
                "API and worker nodes need the shared queue (--redis-url)".into(),
            ));
        }
        let keys = ApiKeys::new(&config.api_keys, config.no_auth);
        if !keys.is_configured() {
            return Err(StartupError::NoApiKeys);
        }
        let keys = keys.with_fingerprint_secret(
            stores
                .jobs
                .get_or_init_secret(KEY_FINGERPRINT_SECRET, &rand::random::<[u8; 32]>())?,
        );
        // With a shared queue, unfinished jobs are the queue's: it delivers them again.
        let unfinished = match stores.queue {
            None => stores.jobs.list_unfinished()?,
            Some(_) => Vec::new(),
        };
        let worker = match stages {
            Some(stages) => Some(Worker::spawn(
                stages,
                WorkerConfig {
                    // Every job the last run accepted is admitted again, even if the limit shrank.
                    queue_size: config.queue_size.max(unfinished.len()).max(1),
                    prepare_threads: config.prepare_threads.max(1),
                    initial_job_estimate: Duration::from_secs_f64(config.initial_eta_secs.max(0.0)),
                    ..WorkerConfig::default()
                },
            )?),
            None => None,
        };
        let timeout = Duration::from_secs(config.fetch_timeout_secs.max(1));
        let http = GuardedHttp::new(config.allow_private_urls, timeout)?
            .allowing_url_credentials(config.allow_url_credentials);
        let settings = Settings {
            sync_wait: config.sync_wait(),
            face_image: FaceImageLimits {
                max_bytes: config.max_image_bytes,
                max_pixels: config.max_image_pixels,
                max_side: FaceImageLimits::pipeline_max_side(),
                download: OutboundLimits {
                    timeout,
                    max_redirects: config.max_redirects,
                },
            },
            record_ttl: config.record_ttl(),
            output_ttl: config.output_ttl(),
            max_body_bytes: config.max_image_bytes.saturating_mul(4) / 3 + 1024 * 1024,
            connections: ConnectionLimits {
                max_connections: config.max_connections,
                header_read_timeout: Duration::from_secs(config.header_read_timeout_secs.max(1)),
            },
            text_limits: config.text_limits(),
            initial_job_estimate: Duration::from_secs_f64(config.initial_eta_secs.max(0.0)),
            queue_cap: config.queue_size.max(1),
            served: crate::served_models::ServedModels::from_args(&config.model)?,
        };
        let intake = BodyIntake::new(
            config.max_body_bytes_in_flight,
            settings.max_body_bytes,
            Duration::from_secs(config.body_read_timeout_secs.max(1)),
        );
        let mut urls = PublicUrls::new(&config.public_base_url());
        if let Some(lifetime) = config.outputs.presigned_lifetime(config.output_ttl()) {
            urls = urls.with_presigned_outputs(stores.outputs.clone(), lifetime);
        }
        let state = AppState(Arc::new(Inner {
            settings,
            keys,
            intake,
            worker,
            queue: stores.queue,
            role,
            draining: tokio_util::sync::CancellationToken::new(),
            pulling: tokio_util::task::TaskTracker::new(),
            jobs: JobContext {
                jobs: stores.jobs,
                outputs: stores.outputs,
                http,
                urls,
                webhook: WebhookPolicy {
                    retries: config.webhook_retries,
                    first_backoff: Duration::from_millis(config.webhook_backoff_ms.max(1)),
                    timeout,
                    secret: config.webhook_secret.clone(),
                },
                likeness,
                finishing: tokio_util::task::TaskTracker::new(),
                deliveries: tokio_util::task::TaskTracker::new(),
                stop_deliveries: tokio_util::sync::CancellationToken::new(),
                live: Default::default(),
            },
            metrics: metrics_handle(),
            cors: CorsPolicy::new(&config.cors_allow_origins),
            started: std::time::Instant::now(),
        }));
        if tokio::runtime::Handle::try_current().is_ok() {
            if let (Some(worker), Some(shared)) = (&state.worker, &state.queue) {
                spawn_pull_loop(
                    &state.pulling,
                    state.jobs.clone(),
                    worker.clone(),
                    shared.queue.clone(),
                    config.cluster.worker_prefetch,
                    state.draining.clone(),
                );
            }
            if state.queue.is_some() {
                crate::webhooks::spawn_outbox_takeover(state.jobs.clone());
            }
            let recovered = match &state.worker {
                Some(worker) if state.queue.is_none() => recover(&state.jobs, worker, unfinished)?,
                // Deliveries are at least once: a webhook another node was sending may go out
                // twice, with the same webhook-id for the receiver to drop the copy.
                _ => crate::recovery::Recovered {
                    webhooks: crate::webhooks::resume_outbox(&state.jobs)?,
                    ..Default::default()
                },
            };
            if recovered != Default::default() {
                tracing::warn!(
                    ?recovered,
                    "recovered what the previous run left unfinished"
                );
            }
            state.spawn_expiry_sweeper();
        } else if !unfinished.is_empty() {
            tracing::warn!(
                jobs = unfinished.len(),
                "no async runtime: unfinished jobs are left for the next start"
            );
        }
        Ok(state)
    }

    /// Removes expired outputs and records periodically; stops when the state is dropped.
    fn spawn_expiry_sweeper(&self) {
        let weak = Arc::downgrade(&self.0);
        let period = (self.settings.output_ttl / 4)
            .clamp(Duration::from_millis(200), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let jobs = inner.jobs.jobs.clone();
                let outputs = inner.jobs.outputs.clone();
                let record_ttl = inner.settings.record_ttl;
                drop(inner);
                match sweep_expired_now(jobs, outputs, record_ttl).await {
                    Ok(Ok(summary)) if summary.files_removed > 0 || summary.records_removed > 0 => {
                        tracing::info!(?summary, "expired outputs removed");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "expiry sweep failed"),
                    Err(e) => tracing::error!(error = %e, "expiry sweep panicked"),
                }
            }
        });
    }
}

/// One expiry sweep now, on the blocking pool: the periodic sweep and `clear_cache` both run it.
/// The outer error is a panic of the sweep.
pub async fn sweep_expired_now(
    jobs: Arc<dyn JobStore>,
    outputs: Arc<dyn OutputStore>,
    record_ttl: Duration,
) -> Result<Result<headshot_store::ExpirySummary, StoreError>, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        headshot_store::sweep_expired(
            jobs.as_ref(),
            outputs.as_ref(),
            record_ttl,
            SystemTime::now(),
        )
    })
    .await
}

/// The exporter with real histogram buckets: without them metrics-exporter-prometheus renders
/// every histogram as a summary (quantiles), which Prometheus cannot aggregate across servers.
fn prometheus_builder() -> PrometheusBuilder {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_string()),
            &headshot_worker::DURATION_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(headshot_worker::METRIC_BATCH_SIZE.to_string()),
                &headshot_worker::BATCH_SIZE_BUCKETS,
            )
        });
    // Only an empty bucket list is refused, and ours are constants.
    builder.unwrap_or_else(|e| {
        tracing::error!(error = %e, "histogram buckets refused; histograms render as summaries");
        PrometheusBuilder::new()
    })
}

/// The process-wide Prometheus recorder (installed once; later states share its handle).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| match prometheus_builder().install_recorder() {
            Ok(handle) => {
                headshot_worker::describe_metrics();
                handle
            }
            Err(e) => {
                tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        })
        .clone()
}
