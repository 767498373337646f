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
    /// The ids a request's `model_id` may name on this server (the default set's first).
    pub model_ids: Vec<String>,
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
    /// Every base model this device can run (`model_id`), and which are in its memory now,
    /// as of its last batch; empty when only the default set is configured.
    pub model_sets: Vec<ModelSetDetails>,
    /// Whether its device thread still runs (a dead one makes /health/ready 503).
    pub alive: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelSetDetails {
    /// The `model_id` that picks it.
    pub id: String,
    /// Jobs without `model_id` get it; it is never unloaded.
    pub default: bool,
    /// In the device's memory now (the others load when a job names them).
    pub loaded: bool,
    /// Its weights' memory in MiB, once it has been loaded; `null` before.
    pub memory_mib: Option<u64>,
}

impl From<headshot_core::ModelSetState> for ModelSetDetails {
    fn from(state: headshot_core::ModelSetState) -> Self {
        ModelSetDetails {
            id: state.id,
            default: state.is_default,
            loaded: state.loaded,
            memory_mib: state.bytes.map(|b| b.div_ceil(1 << 20)),
        }
    }
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
/// at the next periodic sweep, and the base models loaded on demand (`--model-set`). The
/// default model set stays loaded.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClearedCache {
    pub records_removed: usize,
    pub files_removed: usize,
    pub bytes_removed: u64,
    /// The on-demand model sets in memory when asked (as of each device's last batch), which
    /// every device now unloads: at once when idle, else after its running batch.
    pub model_sets_unloaded: Vec<String>,
}
