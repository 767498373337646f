//! Reading request bodies with two bounds: a time limit (a client that stalls mid-body is
//! answered 408 instead of holding its connection), and a budget of bytes being read at once
//! over all requests, so a flood of large bodies waits instead of exhausting memory.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The budget is counted in KiB so that it fits the semaphore's `u32` permits.
const UNIT: usize = 1024;

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
            let bytes = axum::body::to_bytes(body, limit)
                .await
                .map_err(|_| ApiError::BodyTooLarge { limit })?;
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
