//! The jobs this server admitted and has not finished yet: the worker's number of each (for
//! progress and cancel), whose it is, and a watch that yields its final record.

use std::collections::HashMap;
use std::sync::Mutex;

use headshot_core::store::{JobId, JobRecord};
use tokio::sync::watch;

/// One admitted job.
#[derive(Clone, Debug)]
pub struct LiveJob {
    /// The worker's sequence number (`JobTicket::seq`).
    pub seq: u64,
    /// The record's owner fingerprint (tenancy without a store read).
    pub owner: Option<String>,
    /// `Some(final record)` once the job is finished and stored.
    pub done: watch::Receiver<Option<JobRecord>>,
}

#[derive(Debug, Default)]
pub struct LiveJobs(Mutex<HashMap<JobId, LiveJob>>);

impl LiveJobs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, LiveJob>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, id: JobId, job: LiveJob) {
        self.map().insert(id, job);
    }

    pub fn remove(&self, id: JobId) {
        self.map().remove(&id);
    }

    pub fn get(&self, id: JobId) -> Option<LiveJob> {
        self.map().get(&id).cloned()
    }

    /// Every live job, oldest (lowest id) first.
    pub fn all(&self) -> Vec<(JobId, LiveJob)> {
        let mut all: Vec<_> = self.map().iter().map(|(id, j)| (*id, j.clone())).collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }
}
