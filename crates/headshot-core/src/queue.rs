//! The shared job queue between API nodes and workers (implemented in `headshot-store` on
//! Redis Streams). An entry carries only the job's id and model set: the record and the inputs
//! are in the shared [`crate::JobStore`], written before the entry is added.
//!
//! Delivery is at least once. A worker claims entries, keeps each claim alive while it works,
//! and acknowledges an entry only after the job's outputs and final record are stored; an
//! entry whose worker stopped keeping it alive (it died) is delivered again to another worker
//! after the visibility timeout. So a worker checks the record before it starts: a job already
//! `success` or `failed` is acknowledged without running it again.

use std::time::Duration;

use crate::progress::Progress;
use crate::store::{JobId, StoreError};

/// The answer of [`JobQueue::enqueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Added; `backlog` entries (this one included) now wait or run, across all nodes.
    Accepted { backlog: u64 },
    /// Not added: the shared backlog is at `cap` (the rate-limit answer).
    Full { backlog: u64, cap: u64 },
}

/// One claimed entry. Hand it back to [`JobQueue::keep_alive`] and [`JobQueue::ack`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub job_id: JobId,
    /// The model set whose queue the entry is in.
    pub model_set: String,
    /// The queue's own name for the entry (a stream entry id).
    pub receipt: String,
    /// How many times the entry has been delivered, this time included (1 on the first).
    pub deliveries: u64,
    /// The most deliveries the queue allows before giving a job up.
    pub max_deliveries: u64,
}

impl Delivery {
    /// Delivered more often than allowed: every earlier delivery ended without an answer (its
    /// worker died or lost the claim). The caller marks the job failed with
    /// [`Delivery::exhausted_reason`], stores the record, then acknowledges the entry, so a
    /// job that kills its worker never loops.
    pub fn is_exhausted(&self) -> bool {
        self.deliveries > self.max_deliveries
    }

    /// The client's message for an exhausted job.
    pub fn exhausted_reason(&self) -> String {
        let times = self.deliveries.saturating_sub(1);
        format!(
            "The job was started {times} times and its worker stopped each time before it \
             finished; it is not tried again."
        )
    }
}

/// The queue every API node adds to and every worker takes from.
pub trait JobQueue: Send + Sync + 'static {
    /// Adds job `job_id` (whose record and inputs are stored) to the queue of `model_set`,
    /// unless the backlog shared by all nodes and model sets (entries added and not yet
    /// acknowledged) is at the cap. Checking and adding are one step, so concurrent submits
    /// on many nodes never overshoot the cap.
    fn enqueue(&self, model_set: &str, job_id: JobId) -> Result<Admission, StoreError>;

    /// Up to `max` entries for this consumer, from the model sets it serves: first entries
    /// whose claim expired (their worker died), then new ones, waiting up to `wait` for one
    /// to arrive. Empty when none came. Exhausted entries are returned too (see
    /// [`Delivery::is_exhausted`]); the caller fails them.
    fn claim(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, StoreError>;

    /// Renews the claim on `delivery` (call well within the visibility timeout while the job
    /// runs). `false`: the claim was lost (another worker reclaimed the entry, or it was
    /// acknowledged): stop working on it and do not store its outputs.
    fn keep_alive(&self, delivery: &Delivery) -> Result<bool, StoreError>;

    /// Removes the entry for good, once the job's outputs and final record are stored (or it
    /// was found finished already). Acknowledging twice is not an error.
    fn ack(&self, delivery: &Delivery) -> Result<(), StoreError>;

    /// Entries added and not yet acknowledged, across all nodes and model sets.
    fn backlog(&self) -> Result<u64, StoreError>;

    /// How long a claim lasts without [`JobQueue::keep_alive`].
    fn visibility_timeout(&self) -> Duration;

    /// Tells every node where claimed job `job_id` is, so a `fetch` anywhere answers its
    /// progress. The worker holding the claim reports about every second; a report lapses by
    /// itself a few seconds after the last one (its worker died or the job ended).
    fn report_progress(&self, job_id: JobId, progress: Progress) -> Result<(), StoreError>;

    /// The latest report on `job_id`, its ETA counted down by the report's age; `None` while
    /// no worker holds the job (it waits in the queue) or once the report lapsed.
    fn reported_progress(&self, job_id: JobId) -> Result<Option<Progress>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(deliveries: u64) -> Delivery {
        Delivery {
            job_id: 7,
            model_set: "default".into(),
            receipt: "1-0".into(),
            deliveries,
            max_deliveries: 3,
        }
    }

    #[test]
    fn a_job_is_given_up_only_after_its_last_allowed_delivery() {
        assert!(!delivery(1).is_exhausted());
        assert!(!delivery(3).is_exhausted());
        assert!(delivery(4).is_exhausted());
        let reason = delivery(4).exhausted_reason();
        assert!(
            reason.starts_with("The job was started 3 times"),
            "{reason}"
        );
        assert!(reason.ends_with('.'), "{reason}");
    }
}
