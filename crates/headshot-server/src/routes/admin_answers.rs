//! The answers of the enterprise admin calls (routes/admin.rs), in the ModelsLab shape
//! `{"status", "message", "data"}`.

use headshot_core::wire::Status;
use serde::Serialize;

use crate::system::MemoryFacts;

/// `{"status":"success","message":...,"data":{SystemDetails}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SystemDetailsResponse {
    pub status: Status,
    pub message: String,
    pub data: SystemDetails,
}

/// `{"status":"success","message":...,"data":{ClearedCache}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClearCacheResponse {
    pub status: Status,
    pub message: String,
    pub data: ClearedCache,
}

/// What `system_details` reports: facts read now, nothing configured by hand.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SystemDetails {
    /// This server's version (`headshot-server` crate version).
    pub server_version: String,
    /// Seconds since the server state was built (models were loaded before).
    pub uptime_seconds: u64,
    /// The same, as `1d 2h 3m 4s`.
    pub uptime: String,
    /// One entry per device thread.
    pub devices: Vec<DeviceDetails>,
    /// The model sets loaded (manifest names), once each.
    pub models: Vec<String>,
    pub queue: QueueDetails,
    pub memory: MemoryFacts,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceDetails {
    /// As configured: `cpu`, `cuda:0`, `metal:0`.
    pub device: String,
    /// `cpu`, `cuda` or `metal`.
    pub kind: String,
    /// The model set this device loaded.
    pub models: String,
    /// Whether its device thread still runs (a dead one makes /health/ready 503).
    pub alive: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueDetails {
    /// Jobs admitted and not yet running (being prepared or waiting for a device).
    pub queued: usize,
    /// Jobs admitted and running on a device.
    pub running: usize,
    /// The most jobs admitted at once (`--queue-size`).
    pub max_queued: usize,
    /// Whether new jobs are refused because the server is draining.
    pub draining: bool,
}

/// What `clear_cache` removed: outputs and job records past their TTL, swept now instead of
/// at the next periodic sweep. Models stay loaded; there is no other cache.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClearedCache {
    pub records_removed: usize,
    pub files_removed: usize,
    pub bytes_removed: u64,
}
