//! The wire-level heart of headshot-server, free of any framework: request and response types,
//! normalisation of loose client input, error kinds, and the traits the other crates implement
//! (`Generator` for the pipeline, `OutputStore` / `JobStore` for persistence).
//! No candle, tokio or axum here, so these rules are tested fast and fuzzed directly.

pub mod generator;
pub mod store;
pub mod wire;

pub use generator::{
    CensorType, GeneratedImage, GenerationError, GenerationJob, GenerationOutput, Generator,
    RgbImage,
};
pub use store::{
    JobId, JobInput, JobRecord, JobStatus, JobStore, OutputFormat, OutputName, OutputStore,
    StoreError, WebhookDelivery,
};
