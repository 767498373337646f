//! Metric names (the `metrics` facade; the server installs the exporter).

/// Gauge: jobs admitted and waiting for a device thread.
pub const METRIC_QUEUE_DEPTH: &str = "headshot_queue_depth";
/// Gauge: jobs admitted and not finished (waiting + running).
pub const METRIC_JOBS_IN_FLIGHT: &str = "headshot_jobs_in_flight";
/// Histogram (seconds): generation time of a job (its batch's wall time).
pub const METRIC_JOB_DURATION: &str = "headshot_job_duration_seconds";
/// Histogram (seconds): time from admission to the start of generation.
pub const METRIC_QUEUE_WAIT: &str = "headshot_queue_wait_seconds";
/// Histogram (seconds): device time of one generator call (once per batch, whatever its size).
pub const METRIC_BATCH_DURATION: &str = "headshot_batch_duration_seconds";
/// Histogram: jobs per generator call.
pub const METRIC_BATCH_SIZE: &str = "headshot_batch_size";
/// Counter, label `outcome` = `success` | `failed` | `cancelled`: finished jobs, each counted
/// once (failures before the device included; there is no second failure counter).
pub const METRIC_JOBS_FINISHED: &str = "headshot_jobs_finished_total";
/// Counter: generator calls that panicked.
pub const METRIC_GENERATOR_PANICS: &str = "headshot_generator_panics_total";
/// Histogram (seconds): time the prepare stage spent on a job (checks and face analysis).
pub const METRIC_PREPARE_DURATION: &str = "headshot_prepare_duration_seconds";
/// Histogram (seconds): each wait of a device thread for work while admitted jobs were still
/// being prepared (what the separate prepare stage keeps small).
pub const METRIC_DEVICE_IDLE_WITH_WORK: &str = "headshot_device_idle_with_work_seconds";
/// Counter: denoising steps done by the device threads (one per step of a batch).
pub const METRIC_DENOISE_STEPS: &str = "headshot_denoise_steps_total";

/// Gauge, labels `device` (its index) and `model_set` (the `model_id`): 1 while that base
/// model is in the device's memory, 0 once unloaded (only for generators with several).
pub const METRIC_MODEL_SET_LOADED: &str = "headshot_model_set_loaded";
/// Gauge, the same labels: the bytes of that base model's weights, once it has been loaded.
pub const METRIC_MODEL_SET_BYTES: &str = "headshot_model_set_bytes";

/// Histogram buckets (seconds) for every `*_seconds` histogram: from a few milliseconds (the
/// prepare stage, queue waits on an idle server) to ten minutes (a large job on a CPU).
pub const DURATION_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Buckets for [`METRIC_BATCH_SIZE`].
pub const BATCH_SIZE_BUCKETS: [f64; 7] = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0];

/// Registers help texts for the metrics above with the installed recorder (call once at
/// startup, after installing the exporter).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        METRIC_QUEUE_DEPTH,
        "Jobs admitted and waiting for a device thread"
    );
    describe_gauge!(
        METRIC_JOBS_IN_FLIGHT,
        "Jobs admitted and not yet answered (waiting + running)"
    );
    describe_histogram!(
        METRIC_JOB_DURATION,
        Unit::Seconds,
        "Generation time of a job (its batch's wall time)"
    );
    describe_histogram!(
        METRIC_QUEUE_WAIT,
        Unit::Seconds,
        "Time from admission to the start of generation"
    );
    describe_histogram!(
        METRIC_BATCH_DURATION,
        Unit::Seconds,
        "Device time of one generator call (per batch)"
    );
    describe_histogram!(METRIC_BATCH_SIZE, Unit::Count, "Jobs per generator call");
    describe_counter!(
        METRIC_JOBS_FINISHED,
        "Finished jobs by outcome (success, failed, cancelled)"
    );
    describe_counter!(
        METRIC_GENERATOR_PANICS,
        "Generator calls that panicked (caught)"
    );
    describe_histogram!(
        METRIC_PREPARE_DURATION,
        Unit::Seconds,
        "Time the prepare stage spent on a job (checks and face analysis)"
    );
    describe_histogram!(
        METRIC_DEVICE_IDLE_WITH_WORK,
        Unit::Seconds,
        "Waits of device threads for work while admitted jobs were still being prepared"
    );
    describe_counter!(
        METRIC_DENOISE_STEPS,
        "Denoising steps done by the device threads (one per step of a batch)"
    );
    describe_gauge!(
        METRIC_MODEL_SET_LOADED,
        "Whether a base model (model_id) is in a device's memory now (1) or not (0)"
    );
    describe_gauge!(
        METRIC_MODEL_SET_BYTES,
        Unit::Bytes,
        "Memory of a base model's weights on a device, once it has been loaded"
    );
}
