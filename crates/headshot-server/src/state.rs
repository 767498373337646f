//! Everything a request handler needs, built once at start-up.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use headshot_core::store::{JobStore, OutputStore, StoreError};
use headshot_core::wire::TextLimits;
use headshot_core::LikenessScorer;
use headshot_store::{LocalDiskOutputStore, RedbJobStore};
use headshot_worker::{Stages, Worker, WorkerConfig, WorkerError, WorkerHandle};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::auth::ApiKeys;
use crate::config::Config;
use crate::connections::ConnectionLimits;
use crate::face_image::FaceImageLimits;
use crate::finish::JobContext;
use crate::intake::BodyIntake;
use crate::net::{FetchError, GuardedHttp, OutboundLimits};
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
}

/// The job and output stores the server uses.
#[derive(Clone)]
pub struct Stores {
    pub jobs: Arc<dyn JobStore>,
    pub outputs: Arc<dyn OutputStore>,
}

impl Stores {
    /// The single-binary default: PNG/.base64 files in `{data_dir}/outputs`, job records in the
    /// embedded database `{data_dir}/jobs.redb`.
    pub fn open_local(data_dir: &Path, output_ttl: Duration) -> Result<Self, StoreError> {
        let outputs = LocalDiskOutputStore::open(data_dir.join("outputs"), output_ttl)?;
        Self::open_with_outputs(data_dir, Arc::new(outputs))
    }

    /// The stores `config` names: outputs from `--output-store` (local disk or S3), job records
    /// in `{data_dir}/jobs.redb`.
    pub fn open(config: &Config) -> Result<Self, StoreError> {
        let outputs = config.outputs.open(&config.data_dir, config.output_ttl())?;
        Self::open_with_outputs(&config.data_dir, outputs)
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
}

pub struct Inner {
    pub settings: Settings,
    pub keys: ApiKeys,
    pub intake: BodyIntake,
    pub worker: WorkerHandle,
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
        let keys = ApiKeys::new(&config.api_keys, config.no_auth);
        if !keys.is_configured() {
            return Err(StartupError::NoApiKeys);
        }
        let keys = keys.with_fingerprint_secret(
            stores
                .jobs
                .get_or_init_secret(KEY_FINGERPRINT_SECRET, &rand::random::<[u8; 32]>())?,
        );
        let unfinished = stores.jobs.list_unfinished()?;
        let worker = Worker::spawn(
            stages,
            WorkerConfig {
                // Every job the last run accepted is admitted again, even if the limit shrank.
                queue_size: config.queue_size.max(unfinished.len()).max(1),
                prepare_threads: config.prepare_threads.max(1),
                initial_job_estimate: Duration::from_secs_f64(config.initial_eta_secs.max(0.0)),
                ..WorkerConfig::default()
            },
        )?;
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
            let recovered = recover(&state.jobs, &state.worker, unfinished)?;
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
