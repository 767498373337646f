//! Job records in one redb file, so `fetch` keeps working across restarts. Records are stored
//! as JSON (they hold free-form `meta` and `track_id` values); the id counter lives in the same
//! file and is bumped in its own transaction, so ids never repeat even after a crash.

use std::path::Path;
use std::time::SystemTime;

use headshot_core::store::{unix_millis, JobId, JobRecord, JobStore, StoreError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const NEXT_ID: &str = "next_job_id";

/// A [`JobStore`] backed by a redb database file.
pub struct RedbJobStore {
    db: Database,
}

impl std::fmt::Debug for RedbJobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbJobStore").finish_non_exhaustive()
    }
}

fn db_error(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Database(e.into().to_string())
}

fn decode(id: JobId, bytes: &[u8]) -> Result<JobRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        id,
        message: e.to_string(),
    })
}

fn encode(record: &JobRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Corrupt {
        id: record.id,
        message: e.to_string(),
    })
}

impl RedbJobStore {
    /// Opens the database at `path`, creating the file (and its tables) if it does not exist.
    /// The parent directory must exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = Database::create(path).map_err(|e| {
            StoreError::Database(format!("cannot open job database {}: {e}", path.display()))
        })?;
        // Create the tables up front so read transactions never meet a missing table.
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(JOBS).map_err(db_error)?;
        txn.open_table(COUNTERS).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        Ok(RedbJobStore { db })
    }

    /// Every record, in id order (used by the listings below; job counts stay small because
    /// finished records expire).
    fn scan(&self, mut keep: impl FnMut(&JobRecord) -> bool) -> Result<Vec<JobRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(JOBS).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_error)? {
            let (id, bytes) = entry.map_err(db_error)?;
            match decode(id.value(), bytes.value()) {
                Ok(record) if keep(&record) => out.push(record),
                Ok(_) => {}
                // One unreadable record must not hide all others (e.g. from fetch after restart).
                Err(e) => tracing::warn!(error = %e, "skipping unreadable job record"),
            }
        }
        Ok(out)
    }
}

impl JobStore for RedbJobStore {
    fn next_id(&self) -> Result<JobId, StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let id = {
            let mut counters = txn.open_table(COUNTERS).map_err(db_error)?;
            let id = counters
                .get(NEXT_ID)
                .map_err(db_error)?
                .map(|v| v.value())
                .unwrap_or(1);
            counters.insert(NEXT_ID, id + 1).map_err(db_error)?;
            id
        };
        txn.commit().map_err(db_error)?;
        Ok(id)
    }

    fn insert(&self, record: &JobRecord) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut jobs = txn.open_table(JOBS).map_err(db_error)?;
            jobs.insert(record.id, bytes.as_slice()).map_err(db_error)?;
            // A record inserted with an id that was not reserved here (e.g. imported) must
            // still never be handed out again.
            let mut counters = txn.open_table(COUNTERS).map_err(db_error)?;
            let next = counters
                .get(NEXT_ID)
                .map_err(db_error)?
                .map(|v| v.value())
                .unwrap_or(1);
            if record.id >= next {
                counters.insert(NEXT_ID, record.id + 1).map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)
    }

    fn update(&self, record: &JobRecord) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut jobs = txn.open_table(JOBS).map_err(db_error)?;
            if jobs.get(record.id).map_err(db_error)?.is_none() {
                return Err(StoreError::JobNotFound(record.id));
            }
            jobs.insert(record.id, bytes.as_slice()).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }

    fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(JOBS).map_err(db_error)?;
        match table.get(id).map_err(db_error)? {
            Some(bytes) => decode(id, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn list_unfinished(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.scan(|r| !r.status.is_finished())
    }

    fn list_expired(&self, cutoff: SystemTime) -> Result<Vec<JobId>, StoreError> {
        let cutoff_ms = unix_millis(cutoff);
        Ok(self
            .scan(|r| r.is_finished_before(cutoff_ms))?
            .into_iter()
            .map(|r| r.id)
            .collect())
    }

    fn purge_expired(&self, cutoff: SystemTime) -> Result<Vec<JobRecord>, StoreError> {
        let cutoff_ms = unix_millis(cutoff);
        let txn = self.db.begin_write().map_err(db_error)?;
        let mut removed = Vec::new();
        {
            let mut jobs = txn.open_table(JOBS).map_err(db_error)?;
            let mut expired_ids = Vec::new();
            for entry in jobs.iter().map_err(db_error)? {
                let (id, bytes) = entry.map_err(db_error)?;
                if let Ok(record) = decode(id.value(), bytes.value()) {
                    if record.is_finished_before(cutoff_ms) {
                        expired_ids.push(record.id);
                        removed.push(record);
                    }
                }
            }
            for id in expired_ids {
                jobs.remove(id).map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)?;
        Ok(removed)
    }
}
