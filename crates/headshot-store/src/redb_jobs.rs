//! Job records in one redb file, so `fetch` keeps working across restarts. Records are stored
//! as JSON (they hold free-form `meta` and `track_id` values); the id counter lives in the same
//! file and is bumped in its own transaction, so ids never repeat even after a crash. The same
//! file keeps unfinished jobs' inputs (parameters as JSON, the face photo as raw bytes), the
//! webhook outbox and the store's secrets.

use std::path::Path;
use std::time::SystemTime;

use headshot_core::store::{unix_millis, JobId, JobRecord, JobStore, StoreError, WebhookDelivery};
use headshot_core::GenerationJob;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const INPUT_PARAMS: TableDefinition<u64, &[u8]> = TableDefinition::new("input_params");
const INPUT_FACES: TableDefinition<u64, &[u8]> = TableDefinition::new("input_faces");
/// Further photos of a job's person, by (job id, position from 0); absent for one photo.
const INPUT_MORE_FACES: TableDefinition<(u64, u32), &[u8]> =
    TableDefinition::new("input_more_faces");
const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("webhook_outbox");
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
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
    serde_json::to_vec(record).map_err(|e| corrupt(record.id, e))
}

/// Writes `record` and keeps the id counter past its id, inside `txn`.
fn insert_record(txn: &WriteTransaction, record: &JobRecord) -> Result<(), StoreError> {
    let bytes = encode(record)?;
    let mut jobs = txn.open_table(JOBS).map_err(db_error)?;
    jobs.insert(record.id, bytes.as_slice()).map_err(db_error)?;
    // A record inserted with an id that was not reserved here (e.g. imported) must still
    // never be handed out again.
    let mut counters = txn.open_table(COUNTERS).map_err(db_error)?;
    let next = counters
        .get(NEXT_ID)
        .map_err(db_error)?
        .map(|v| v.value())
        .unwrap_or(1);
    if record.id >= next {
        counters.insert(NEXT_ID, record.id + 1).map_err(db_error)?;
    }
    Ok(())
}

/// Drops a job's inputs inside `txn` (a no-op if it has none).
fn remove_input(txn: &WriteTransaction, id: JobId) -> Result<(), StoreError> {
    txn.open_table(INPUT_PARAMS)
        .map_err(db_error)?
        .remove(id)
        .map_err(db_error)?;
    txn.open_table(INPUT_FACES)
        .map_err(db_error)?
        .remove(id)
        .map_err(db_error)?;
    txn.open_table(INPUT_MORE_FACES)
        .map_err(db_error)?
        .retain_in((id, 0)..=(id, u32::MAX), |_, _| false)
        .map_err(db_error)?;
    Ok(())
}

fn corrupt(id: JobId, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        id,
        message: e.to_string(),
    }
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
        txn.open_table(INPUT_PARAMS).map_err(db_error)?;
        txn.open_table(INPUT_FACES).map_err(db_error)?;
        txn.open_table(INPUT_MORE_FACES).map_err(db_error)?;
        txn.open_table(OUTBOX).map_err(db_error)?;
        txn.open_table(SECRETS).map_err(db_error)?;
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
        let txn = self.db.begin_write().map_err(db_error)?;
        insert_record(&txn, record)?;
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
            for id in &expired_ids {
                jobs.remove(*id).map_err(db_error)?;
            }
            drop(jobs);
            for id in expired_ids {
                remove_input(&txn, id)?;
            }
        }
        txn.commit().map_err(db_error)?;
        Ok(removed)
    }

    fn insert_with_input(&self, record: &JobRecord, job: &GenerationJob) -> Result<(), StoreError> {
        let params = serde_json::to_vec(&job.settings).map_err(|e| corrupt(record.id, e))?;
        let txn = self.db.begin_write().map_err(db_error)?;
        insert_record(&txn, record)?;
        txn.open_table(INPUT_PARAMS)
            .map_err(db_error)?
            .insert(record.id, params.as_slice())
            .map_err(db_error)?;
        txn.open_table(INPUT_FACES)
            .map_err(db_error)?
            .insert(record.id, job.face_image.as_slice())
            .map_err(db_error)?;
        {
            let mut more = txn.open_table(INPUT_MORE_FACES).map_err(db_error)?;
            for (position, photo) in (0u32..).zip(&job.more_face_images) {
                more.insert((record.id, position), photo.as_slice())
                    .map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)
    }

    fn input(&self, id: JobId) -> Result<Option<GenerationJob>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let params = txn.open_table(INPUT_PARAMS).map_err(db_error)?;
        let faces = txn.open_table(INPUT_FACES).map_err(db_error)?;
        let more = txn.open_table(INPUT_MORE_FACES).map_err(db_error)?;
        let (Some(params), Some(face)) = (
            params.get(id).map_err(db_error)?,
            faces.get(id).map_err(db_error)?,
        ) else {
            return Ok(None);
        };
        let more_face_images = more
            .range((id, 0)..=(id, u32::MAX))
            .map_err(db_error)?
            .map(|entry| entry.map(|(_, photo)| photo.value().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        Ok(Some(GenerationJob {
            settings: serde_json::from_slice(params.value()).map_err(|e| corrupt(id, e))?,
            face_image: face.value().to_vec(),
            more_face_images,
        }))
    }

    fn finish(
        &self,
        record: &JobRecord,
        webhook: Option<&WebhookDelivery>,
    ) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        let delivery = webhook
            .map(|d| serde_json::to_vec(d).map_err(|e| corrupt(record.id, e)))
            .transpose()?;
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut jobs = txn.open_table(JOBS).map_err(db_error)?;
            if jobs.get(record.id).map_err(db_error)?.is_none() {
                return Err(StoreError::JobNotFound(record.id));
            }
            jobs.insert(record.id, bytes.as_slice()).map_err(db_error)?;
        }
        remove_input(&txn, record.id)?;
        if let (Some(webhook), Some(delivery)) = (webhook, delivery) {
            txn.open_table(OUTBOX)
                .map_err(db_error)?
                .insert(webhook.id.as_str(), delivery.as_slice())
                .map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }

    fn pending_webhooks(&self) -> Result<Vec<WebhookDelivery>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(OUTBOX).map_err(db_error)?;
        let mut pending = Vec::new();
        for entry in table.iter().map_err(db_error)? {
            let (id, bytes) = entry.map_err(db_error)?;
            match serde_json::from_slice::<WebhookDelivery>(bytes.value()) {
                Ok(delivery) => pending.push(delivery),
                Err(e) => {
                    tracing::warn!(id = id.value(), error = %e, "skipping unreadable webhook delivery")
                }
            }
        }
        pending.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(pending)
    }

    fn ack_webhook(&self, delivery_id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        txn.open_table(OUTBOX)
            .map_err(db_error)?
            .remove(delivery_id)
            .map_err(db_error)?;
        txn.commit().map_err(db_error)
    }

    fn get_or_init_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let secret = {
            let mut secrets = txn.open_table(SECRETS).map_err(db_error)?;
            let existing = secrets
                .get(name)
                .map_err(db_error)?
                .map(|v| v.value().to_vec());
            match existing {
                Some(secret) => secret,
                None => {
                    secrets.insert(name, candidate).map_err(db_error)?;
                    candidate.to_vec()
                }
            }
        };
        txn.commit().map_err(db_error)?;
        Ok(secret)
    }
}
