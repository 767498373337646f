//! Request bodies are read as raw bytes and parsed here, so a missing or wrong Content-Type
//! still works (clients differ) and malformed JSON gets the documented error shape.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::HeaderMap;
use headshot_core::wire::FetchRequest;
use serde_json::Value;

use crate::auth::ApiKeys;
use crate::error::ApiError;
use crate::intake;
use crate::state::AppState;

/// Reads the small body of a fetch, cancel or enterprise admin call (`{"key", "request_id"}`,
/// at most 64 KiB), refusing a wrong header key before reading it.
pub async fn read_small_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<FetchRequest, ApiError> {
    let body = refuse_wrong_header_key(&state.keys, headers, body)?;
    let body = state.intake.read(headers, body, 64 * 1024).await?;
    Ok(FetchRequest::from_json(&parse_object(&body.bytes)?))
}

/// Parses a JSON object body; an empty body is an empty object (fetch calls often send none).
/// A leading UTF-8 byte order mark (some Windows tools write one) is skipped.
pub fn parse_object(bytes: &[u8]) -> Result<Value, ApiError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Array(_) => Err(ApiError::NotAnObject("an array")),
        Value::String(_) => Err(ApiError::NotAnObject("a string")),
        Value::Number(_) => Err(ApiError::NotAnObject("a number")),
        Value::Bool(_) => Err(ApiError::NotAnObject("a boolean")),
        Value::Null => Err(ApiError::NotAnObject("null")),
    }
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
            // Auth schemes are case-insensitive (RFC 9110 section 11.1).
            text(axum::http::header::AUTHORIZATION.as_str())
                .and_then(|v| v.trim().split_once(|c: char| c.is_ascii_whitespace()))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, key)| key.trim())
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

/// Refuses a wrong key sent in a header before any of the body is read, so a client without a
/// valid key cannot make the server buffer megabytes; the unread body is discarded (not kept)
/// so that the client still gets the answer. (A body key is checked after parsing.)
pub fn refuse_wrong_header_key(
    keys: &ApiKeys,
    headers: &HeaderMap,
    body: Body,
) -> Result<Body, ApiError> {
    match header_key(headers) {
        Some(key) if !keys.accepts(Some(&key)) => {
            intake::discard(body, 0);
            Err(ApiError::InvalidKey)
        }
        _ => Ok(body),
    }
}
