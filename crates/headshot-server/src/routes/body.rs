//! Request bodies are read as raw bytes and parsed here, so a missing or wrong Content-Type
//! still works (clients differ) and malformed JSON gets the documented error shape.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use serde_json::Value;

use crate::error::ApiError;

/// Parses a JSON body; an empty body is an empty object (fetch calls often send none).
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// Reads a body of at most `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::BodyTooLarge { limit })
}

/// The key from a `key` header, or else `Authorization: Bearer <key>` (newer ModelsLab clients).
pub fn header_key(headers: &HeaderMap) -> Option<String> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    text("key")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            text(axum::http::header::AUTHORIZATION.as_str())
                .and_then(|v| v.trim().strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|s| !s.is_empty())
        })
        .map(str::to_string)
}

/// Query parameters as a JSON object, so GET fetches reuse the body parser.
pub fn query_object(query: HashMap<String, String>) -> Value {
    Value::Object(
        query
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}
