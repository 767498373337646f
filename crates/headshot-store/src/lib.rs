//! Persistence for headshot-server: generated images on local disk ([`LocalDiskOutputStore`])
//! or in an S3-compatible bucket ([`S3OutputStore`]),
//! job records in an embedded redb database ([`RedbJobStore`]), in memory
//! ([`MemoryJobStore`]) or in a Redis server shared by many nodes ([`RedisJobStore`]), and the
//! expiry sweep that ties the two together ([`sweep_expired`]); and the job queue many nodes
//! share, on Redis Streams ([`RedisJobQueue`]).
//! The traits live in `headshot_core::store` so other backends (object storage, a shared
//! database) can be added without touching the server.

mod blocking;
mod expiry;
mod local_disk;
mod memory;
mod redb_jobs;
mod redis_jobs;
mod redis_pool;
mod redis_queue;
mod s3;

pub use expiry::{sweep_expired, ExpirySummary, DEFAULT_RECORD_TTL};
pub use headshot_core::queue::{Admission, Delivery, JobQueue};
pub use headshot_core::store::{
    JobId, JobRecord, JobStatus, JobStore, OutputFormat, OutputName, OutputStore, StoreError,
    SweepReport, WebhookDelivery,
};
pub use local_disk::{
    encode_output, png_data_uri, random_prefix, LocalDiskOutputStore, DEFAULT_OUTPUT_TTL,
};
pub use memory::MemoryJobStore;
pub use redb_jobs::RedbJobStore;
pub use redis_jobs::RedisJobStore;
pub use redis_pool::RedisConfig;
pub use redis_queue::{QueueConfig, RedisJobQueue, CONSUMER_SWEEP, PROGRESS_LAPSE};
pub use s3::{S3Config, S3OutputStore};
