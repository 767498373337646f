//! `headshot-server`: loads the pipeline, opens the stores, serves the API.

use anyhow::Context as _;
use clap::Parser;
use headshot_server::auth::ApiKeys;
use headshot_server::{serve, AppState, Config, ModelArgs, StartupError, Stores};
use std::sync::Arc;

use headshot_core::LikenessScorer;
use headshot_worker::Stages;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logs(config.json_logs);
    if let Some(why) = config.unreachable_public_base_url() {
        tracing::warn!("{why}");
    }
    // Refuse a configuration without keys before spending minutes loading models.
    if !ApiKeys::new(&config.api_keys, config.no_auth).is_configured() {
        anyhow::bail!(StartupError::NoApiKeys);
    }

    config.cluster.check().map_err(anyhow::Error::msg)?;

    // Loading models is slow and synchronous; do it before the async runtime starts serving.
    // An API node (`--role api`) loads none: workers generate.
    let loaded = if config.cluster.role.generates() {
        Some(load_stages(&config.model)?)
    } else {
        None
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?;
    runtime.block_on(run(config, loaded))
}

async fn run(
    config: Config,
    loaded: Option<(Stages, Arc<dyn LikenessScorer>)>,
) -> anyhow::Result<()> {
    let stores = Stores::open(&config).with_context(|| {
        format!(
            "opening the stores (data folder {}, outputs {})",
            config.data_dir.display(),
            config
                .outputs
                .output_store
                .as_deref()
                .unwrap_or("on local disk")
        )
    })?;
    let (stages, likeness) = loaded.unzip();
    let state = AppState::for_role(&config, stages, stores, likeness)?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("could not listen on {}", config.bind))?;
    tracing::info!(
        address = %listener.local_addr()?,
        role = ?config.cluster.role,
        public_base_url = %config.public_base_url(),
        "headshot-server listening"
    );
    serve(listener, state, shutdown_signal()).await?;
    Ok(())
}

/// Builds the real pipeline (SD1.5 + IP-Adapter FaceID PlusV2 + face analysis + safety checker)
/// once per device; each becomes one device thread of the worker, and its face analyzer (on
/// that device's `--face-device`) one preparer of the prepare stage. The first device's
/// analyzer also scores the likeness of outputs in the finish stage.
fn load_stages(args: &ModelArgs) -> anyhow::Result<(Stages, Arc<dyn LikenessScorer>)> {
    // Settle every device's placement before minutes of loading, so a bad flag fails at once.
    let placements = args.placements().map_err(anyhow::Error::msg)?;
    let mut base = headshot_pipeline::PipelineConfig::new(&args.models);
    base.dtype = args.dtype;
    base.load_safety_checker = !args.no_safety_checker;
    base.lora_folder = args
        .lora_folder()
        .context("listing the LoRA folder (--lora-dir)")?;
    if args.onnxruntime_library.is_some() {
        base.face_options.onnxruntime_library = args.onnxruntime_library.clone();
    }
    // Resolve the manifests (and download what is missing) once for every device: the
    // `--model-set`s first, while the default set is still a manifest to complete them from.
    let (on_demand, memory) = args.on_demand();
    base.on_demand = on_demand;
    base.on_demand_memory = memory;
    base.on_demand = base
        .resolve_on_demand()
        .context("resolving the model sets (--model-set)")?;
    let set = base
        .resolve()
        .with_context(|| format!("resolving the model set {}", args.models.display()))?;
    base.models = headshot_pipeline::ModelSet::Resolved(set);
    let mut stages = Stages {
        preparers: Vec::with_capacity(placements.len()),
        generators: Vec::with_capacity(placements.len()),
    };
    let mut likeness: Option<Arc<headshot_face::FaceAnalyzer>> = None;
    for (device, face_cuda_device) in placements {
        let mut config = base.clone();
        config.device = device;
        config.face_options.cuda_device = face_cuda_device;
        let pipeline = headshot_pipeline::Pipeline::load(&config).with_context(|| {
            format!(
                "loading the model set {} on {device}",
                args.models.display()
            )
        })?;
        let faces = pipeline
            .face_analyzer()
            .context("the model set has no face models (face_detector, face_recognizer)")?;
        likeness.get_or_insert_with(|| faces.clone());
        stages.preparers.push(faces);
        stages.generators.push(Box::new(pipeline));
    }
    let likeness = likeness.context("no device to load the model set on")?;
    Ok((stages, likeness))
}

/// Human-readable lines on stderr, or one JSON object per line (`--json-logs`) for log
/// collectors; `RUST_LOG` filters either way (default `info`).
fn init_logs(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        logs.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing admitted jobs");
}
