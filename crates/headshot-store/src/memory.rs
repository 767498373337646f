//! Job records in memory: for tests and for deployments that do not need fetch across
//! restarts. Same semantics as the redb store, lost on exit.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use headshot_core::store::{unix_millis, JobId, JobRecord, JobStore, StoreError};

#[derive(Debug, Default)]
struct Inner {
    next_id: JobId,
    jobs: BTreeMap<JobId, JobRecord>,
}

/// A [`JobStore`] that lives in a `Mutex<BTreeMap>`.
#[derive(Debug, Default)]
pub struct MemoryJobStore {
    inner: Mutex<Inner>,
}

impl MemoryJobStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated (every change is
        // one insert/remove), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl JobStore for MemoryJobStore {
    fn next_id(&self) -> Result<JobId, StoreError> {
        let mut inner = self.lock();
        let id = inner.next_id.max(1);
        inner.next_id = id + 1;
        Ok(id)
    }

    fn insert(&self, record: &JobRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if record.id >= inner.next_id {
            inner.next_id = record.id + 1;
        }
        inner.jobs.insert(record.id, record.clone());
        Ok(())
    }

    fn update(&self, record: &JobRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        match inner.jobs.get_mut(&record.id) {
            Some(slot) => {
                *slot = record.clone();
                Ok(())
            }
            None => Err(StoreError::JobNotFound(record.id)),
        }
    }

    fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.lock().jobs.get(&id).cloned())
    }

    fn list_unfinished(&self) -> Result<Vec<JobRecord>, StoreError> {
        Ok(self
            .lock()
            .jobs
            .values()
            .filter(|r| !r.status.is_finished())
            .cloned()
            .collect())
    }

    fn list_expired(&self, cutoff: SystemTime) -> Result<Vec<JobId>, StoreError> {
        let cutoff_ms = unix_millis(cutoff);
        Ok(self
            .lock()
            .jobs
            .values()
            .filter(|r| r.is_finished_before(cutoff_ms))
            .map(|r| r.id)
            .collect())
    }

    fn purge_expired(&self, cutoff: SystemTime) -> Result<Vec<JobRecord>, StoreError> {
        let cutoff_ms = unix_millis(cutoff);
        let mut inner = self.lock();
        let expired: Vec<JobId> = inner
            .jobs
            .values()
            .filter(|r| r.is_finished_before(cutoff_ms))
            .map(|r| r.id)
            .collect();
        Ok(expired
            .into_iter()
            .filter_map(|id| inner.jobs.remove(&id))
            .collect())
    }
}
