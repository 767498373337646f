//! headshot-server: a ModelsLab-compatible head shot API in front of the headshot pipeline.
//! A thin router: the wire rules live in `headshot_core::wire`, concurrency in
//! `headshot-worker`, persistence in `headshot-store`; this crate wires them to HTTP, fetches
//! face images and delivers webhooks (both SSRF-guarded), and maps errors to the wire in
//! [`error`].

pub mod auth;
pub mod bodies;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod error;
pub mod face_image;
pub mod finish;
pub mod intake;
pub mod likeness;
pub mod live;
pub mod net;
pub mod output_store;
pub mod pull;
pub mod recovery;
pub mod request_context;
pub mod routes;
pub mod served_models;
pub mod state;
pub mod system;
pub mod urls;
pub mod webhooks;

pub use config::{Config, ModelArgs};
pub use output_store::{OutputStoreArgs, PublicOutputs};
pub use routes::build_router;
pub use state::{AppState, StartupError, Stores};

/// Serves `state` on `listener` until `shutdown` resolves, then drains: new submits are
/// refused and `/health` reports not ready, while fetch and outputs keep answering until every
/// admitted job has finished and its record is stored. Only then does the listener close.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let worker = state.worker.clone();
    let (draining, pulling) = (state.draining.clone(), state.pulling.clone());
    let ctx = state.jobs.clone();
    let finishing = ctx.finishing.clone();
    let limits = state.settings.connections;
    let router = build_router(state);
    // The listener stays open through the drain, so fetch and outputs answer while the
    // admitted jobs finish; new submits are refused meanwhile.
    let drain = async move {
        shutdown.await;
        // No more claims from the shared queue; what was claimed finishes below.
        draining.cancel();
        if let Some(worker) = &worker {
            worker.shutdown().await;
        }
        pulling.close();
        pulling.wait().await;
        finishing.close();
        finishing.wait().await;
        tracing::info!("drained: every admitted job is finished and stored");
    };
    connections::serve_connections(listener, router, limits, drain).await;
    // Webhooks still retrying stay in the outbox for the next start.
    ctx.stop_deliveries.cancel();
    ctx.deliveries.close();
    ctx.deliveries.wait().await;
    Ok(())
}
