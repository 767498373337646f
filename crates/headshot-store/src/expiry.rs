//! One sweep over both stores: expired job records go, together with their outputs, and any
//! output file past the output TTL goes too (even if its record is still kept).

use std::time::{Duration, SystemTime};

use headshot_core::store::{JobStore, OutputStore, StoreError};

/// Job records are kept a week by default: longer than outputs (24 h), so a late fetch still
/// answers with the job rather than "Request not found".
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What one [`sweep_expired`] call removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpirySummary {
    pub records_removed: usize,
    pub files_removed: usize,
    pub bytes_removed: u64,
}

/// Removes job records finished more than `record_ttl` before `now` (and their output files),
/// then every output file older than the output store's own TTL. Call it periodically.
pub fn sweep_expired(
    jobs: &dyn JobStore,
    outputs: &dyn OutputStore,
    record_ttl: Duration,
    now: SystemTime,
) -> Result<ExpirySummary, StoreError> {
    let mut summary = ExpirySummary::default();
    if let Some(cutoff) = now.checked_sub(record_ttl) {
        for record in jobs.purge_expired(cutoff)? {
            summary.records_removed += 1;
            summary.files_removed += outputs.delete_prefix(&record.file_prefix)?;
        }
    }
    let report = outputs.sweep_expired(now)?;
    summary.files_removed += report.files_removed;
    summary.bytes_removed += report.bytes_removed;
    if summary.records_removed > 0 {
        tracing::info!(
            records = summary.records_removed,
            "removed expired job records"
        );
    }
    Ok(summary)
}
