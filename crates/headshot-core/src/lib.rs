//! The wire-level heart of headshot-server, free of any framework: request and response types,
//! normalisation of loose client input, the one job type, error kinds, and the traits the other
//! crates implement (`FacePreparer`, `Generator` and `LikenessScorer` for the model stages,
//! `OutputStore` / `JobStore` for persistence, `JobQueue` for the queue shared by many nodes).
//! No candle, tokio or axum here, so these rules are tested fast and fuzzed directly.

pub mod generator;
pub mod job;
pub mod model_choice;
pub mod progress;
pub mod queue;
pub mod store;
pub mod wire;

pub use generator::{
    cosine_similarity, error_chain, prepare_job, FacePreparer, GeneratedImage, GenerationError,
    GenerationOutput, Generator, GeneratorInfo, LikenessScorer, ModelSetState, RgbImage,
    StepObserver,
};
pub use job::{
    plan_batches, BatchKey, CensorType, GenerationJob, JobLimits, JobSettings, PreparedFace,
    PreparedJob,
};
pub use model_choice::{LoraChoice, ModelChoice, SchedulerName, UnknownScheduler};
pub use progress::Progress;
pub use queue::{Admission, Delivery, JobQueue};
pub use store::{
    JobId, JobRecord, JobStatus, JobStore, OutputFormat, OutputName, OutputStore, StoreError,
    WebhookDelivery,
};
