//! Output files under `/outputs/{prefix}-{i}.{png|base64}`, until they expire (then 404).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use headshot_core::store::OutputName;

use crate::error::ApiError;
use crate::state::AppState;

/// An output image
#[utoipa::path(
    get,
    path = "/outputs/{file}",
    tag = "outputs",
    params(("file" = String, Path, description = "`{file_prefix}-{i}.png`, or `.base64` (a `data:image/png;base64,...` text) when the request set `base64`")),
    responses(
        (status = 200, description = "The image", content(
            ("image/png"),
            ("text/plain"),
        )),
        (status = 404, description = "No such output (never made, or expired)", body = headshot_core::wire::ErrorResponse),
    )
)]
pub async fn serve_output(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    // Only names of the exact form we create are looked up, so no path can escape the store.
    let Ok(name) = file.parse::<OutputName>() else {
        return ApiError::OutputNotFound.into_response();
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
        Ok(Ok(None)) => ApiError::OutputNotFound.into_response(),
        Ok(Err(e)) => ApiError::Store(e).into_response(),
        Err(e) => {
            ApiError::Internal(format!("reading the output {name} panicked: {e}")).into_response()
        }
    }
}
