//! Reading request bodies with two bounds: a time limit (a client that stalls mid-body is
//! answered 408 instead of holding its connection), and a budget of bytes being read at once
//! over all requests, so a flood of large bodies waits instead of exhausting memory.
//!
//! A body that is refused unread (too large, or a wrong key in the headers) is still read and
//! thrown away in the background, within `DRAIN_BYTES` and `DRAIN_TIME`: closing a connection
//! with unread bytes makes the kernel send a reset, and a client that writes its whole body
//! before reading (requests, the SDKs, reqwest) then loses the answer. nginx's lingering close.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The budget is counted in KiB so that it fits the semaphore's `u32` permits.
const UNIT: usize = 1024;
/// How much of a refused body is read and discarded so that its client sees the answer.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct BodyIntake {
    budget: Arc<Semaphore>,
    budget_units: u32,
    timeout: Duration,
}

/// A body read under the budget; its share is returned when this is dropped, so callers keep
/// it while they parse the bytes.
pub struct HeldBody {
    pub bytes: Bytes,
    _share: OwnedSemaphorePermit,
}

impl BodyIntake {
    /// `bytes_in_flight` is raised to `largest_body` so that one largest body always fits.
    pub fn new(bytes_in_flight: usize, largest_body: usize, timeout: Duration) -> Self {
        let units = bytes_in_flight.max(largest_body).div_ceil(UNIT).max(1);
        let budget_units = u32::try_from(units).unwrap_or(u32::MAX);
        BodyIntake {
            budget: Arc::new(Semaphore::new(budget_units as usize)),
            budget_units,
            timeout,
        }
    }

    /// Reads a body of at most `limit` bytes. Its share of the budget is its Content-Length
    /// (the limit when the length is not announced), taken before the first byte is read.
    pub async fn read(
        &self,
        headers: &HeaderMap,
        body: Body,
        limit: usize,
    ) -> Result<HeldBody, ApiError> {
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n > limit as u64) {
            discard(body, 0);
            return Err(ApiError::BodyTooLarge { limit });
        }
        let share = announced.map_or(limit, |n| n as usize).div_ceil(UNIT);
        let share = u32::try_from(share)
            .unwrap_or(u32::MAX)
            .min(self.budget_units);
        let read = async {
            let share = self
                .budget
                .clone()
                .acquire_many_owned(share)
                .await
                .expect("the semaphore is never closed");
            let bytes = read_at_most(body, limit).await?;
            Ok(HeldBody {
                bytes,
                _share: share,
            })
        };
        tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| ApiError::BodyTimeout {
                secs: self.timeout.as_secs(),
            })?
    }
}

/// Collects the body, or drains the rest of it and refuses once it passes `limit`.
async fn read_at_most(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| ApiError::BodyRead { source })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we read
        };
        if collected.len() + data.len() > limit {
            discard(body, (collected.len() + data.len()) as u64);
            return Err(ApiError::BodyTooLarge { limit });
        }
        collected.extend_from_slice(&data);
    }
    Ok(collected.into())
}

/// Reads and throws away, while the answer is sent, what is left of a refused body: within
/// `DRAIN_BYTES` (counting the `already_read` ones) and `DRAIN_TIME`; past either the
/// connection is simply closed.
pub fn discard(mut body: Body, already_read: u64) {
    let drain = async move {
        let mut read = already_read;
        while read < DRAIN_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => break,
            }
        }
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    });
}
