//! Job records in memory: for tests and for deployments that do not need fetch across
//! restarts. Same semantics as the redb store, lost on exit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use headshot_core::store::{unix_millis, JobId, JobRecord, JobStore, StoreError, WebhookDelivery};
use headshot_core::GenerationJob;

#[derive(Debug, Default)]
struct Inner {
    next_id: JobId,
    jobs: BTreeMap<JobId, JobRecord>,
    inputs: HashMap<JobId, GenerationJob>,
    outbox: Vec<WebhookDelivery>,
    secrets: HashMap<String, Vec<u8>>,
}

impl Inner {
    fn insert(&mut self, record: &JobRecord) {
        if record.id >= self.next_id {
            self.next_id = record.id + 1;
        }
        self.jobs.insert(record.id, record.clone());
    }
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
        self.lock().insert(record);
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
        for id in &expired {
            inner.inputs.remove(id);
        }
        Ok(expired
            .into_iter()
            .filter_map(|id| inner.jobs.remove(&id))
            .collect())
    }

    fn insert_with_input(&self, record: &JobRecord, job: &GenerationJob) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.insert(record);
        inner.inputs.insert(record.id, job.clone());
        Ok(())
    }

    fn input(&self, id: JobId) -> Result<Option<GenerationJob>, StoreError> {
        Ok(self.lock().inputs.get(&id).cloned())
    }

    fn finish(
        &self,
        record: &JobRecord,
        webhook: Option<&WebhookDelivery>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let Some(slot) = inner.jobs.get_mut(&record.id) else {
            return Err(StoreError::JobNotFound(record.id));
        };
        *slot = record.clone();
        inner.inputs.remove(&record.id);
        if let Some(delivery) = webhook {
            inner.outbox.retain(|d| d.id != delivery.id);
            inner.outbox.push(delivery.clone());
        }
        Ok(())
    }

    fn pending_webhooks(&self) -> Result<Vec<WebhookDelivery>, StoreError> {
        let mut pending = self.lock().outbox.clone();
        pending.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(pending)
    }

    fn ack_webhook(&self, delivery_id: &str) -> Result<(), StoreError> {
        self.lock().outbox.retain(|d| d.id != delivery_id);
        Ok(())
    }

    fn get_or_init_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .lock()
            .secrets
            .entry(name.to_string())
            .or_insert_with(|| candidate.to_vec())
            .clone())
    }
}
