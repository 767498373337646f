use std::time::Duration;

/// How a worker admits, batches and estimates jobs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Most jobs admitted at once (waiting + running). One more is refused with
    /// [`SubmitError::QueueFull`](crate::SubmitError::QueueFull) carrying this number.
    pub queue_size: usize,
    /// Threads of the prepare stage (checks and face analysis, CPU work before the device
    /// queue); raised to one per preparer. One keeps jobs strictly in admission order (ONNX
    /// Runtime already spreads one analysis over the cores); more let a quick photo pass one
    /// that is slow to analyse, at the price of that order.
    pub prepare_threads: usize,
    /// After taking a job, how long a device thread may wait for more compatible jobs to fill a
    /// batch. Zero (the default) batches only what is already queued, so a lone job never waits.
    pub batch_wait: Duration,
    /// How many recent batches (per device) the rate behind `eta` and `retry_after` averages.
    pub eta_window: usize,
    /// Time a reference job (512x512, 21 steps, one sample) is assumed to take until the first
    /// batch has been measured; larger jobs count as more work.
    pub initial_job_estimate: Duration,
    /// Names the device threads (`{name}-{i}`) and appears in logs.
    pub name: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            queue_size: 16,
            prepare_threads: 1,
            batch_wait: Duration::ZERO,
            eta_window: 16,
            initial_job_estimate: Duration::from_secs(10),
            name: "headshot-worker".to_string(),
        }
    }
}
