//! Output files under `/outputs/{prefix}-{i}.{png|base64}`, until they expire (then 404).

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use headshot_core::store::OutputName;

use crate::state::AppState;

pub async fn serve_output(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    // Only names of the exact form we create are looked up, so no path can escape the store.
    let Ok(name) = file.parse::<OutputName>() else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let outputs = state.jobs.outputs.clone();
    let lookup = name.clone();
    match tokio::task::spawn_blocking(move || outputs.read(&lookup)).await {
        Ok(Ok(Some(contents))) => (
            [
                (header::CONTENT_TYPE, name.format().content_type()),
                (header::CACHE_CONTROL, "private, max-age=3600"),
            ],
            contents,
        )
            .into_response(),
        Ok(Ok(None)) => (
            StatusCode::NOT_FOUND,
            "not found (outputs expire after a while)",
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(file = %name, error = %e, "reading an output failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(e) => {
            tracing::error!(file = %name, error = %e, "reading an output panicked");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
