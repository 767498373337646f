//! headshot-server: a ModelsLab-compatible head shot API in front of the headshot pipeline.
//! A thin router: the wire rules live in `headshot_core::wire`, concurrency in
//! `headshot-worker`, persistence in `headshot-store`; this crate wires them to HTTP, fetches
//! face images and delivers webhooks (both SSRF-guarded), and maps errors to the wire in
//! [`error`].

pub mod auth;
pub mod config;
pub mod connections;
pub mod error;
pub mod face_image;
pub mod intake;
pub mod jobs;
pub mod net;
pub mod routes;
pub mod state;
pub mod urls;

pub use config::{Config, ModelArgs};
pub use routes::build_router;
pub use state::{AppState, StartupError, Stores};

/// Serves `state` on `listener` until `shutdown` resolves, then drains the worker.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let worker = state.worker.clone();
    let limits = state.settings.connections;
    let router = build_router(state);
    connections::serve_connections(listener, router, limits, shutdown).await;
    worker.shutdown().await;
    Ok(())
}
