use std::time::Duration;

/// How a worker admits, batches and estimates jobs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Most jobs admitted at once (waiting + running). One more is refused with
    /// [`SubmitError::QueueFull`](crate::SubmitError::QueueFull) carrying this number.
    pub queue_size: usize,
    /// After taking a job, how long a device thread may wait for more compatible jobs to fill a
    /// batch. Zero (the default) batches only what is already queued, so a lone job never waits.
    pub batch_wait: Duration,
    /// How many recent per-job times the ETA's moving average covers.
    pub eta_window: usize,
    /// Per-job time assumed until the first job has finished.
    pub initial_job_estimate: Duration,
    /// Names the device threads (`{name}-{i}`) and appears in logs.
    pub name: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            queue_size: 16,
            batch_wait: Duration::ZERO,
            eta_window: 16,
            initial_job_estimate: Duration::from_secs(10),
            name: "headshot-worker".to_string(),
        }
    }
}
