use std::time::Duration;

/// Why a job was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Every queue slot is taken. The server answers "Rate limit exceeded. Maximum {max} queued
    /// requests allowed." with `retry_after` (an estimate of when a slot frees up).
    #[error("Rate limit exceeded. Maximum {max} queued requests allowed.")]
    QueueFull { max: usize, retry_after: Duration },
    /// The worker is shutting down and takes no new jobs.
    #[error("the server is shutting down and accepts no new jobs; retry on another instance")]
    ShuttingDown,
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("a worker needs at least one generator (one per device)")]
    NoGenerators,
    #[error("a worker needs at least one face preparer for its prepare stage")]
    NoPreparers,
    #[error("queue_size must be at least 1")]
    ZeroQueueSize,
    #[error("could not start the device thread '{name}': {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
}
