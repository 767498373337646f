//! The worker owns concurrency between the HTTP server and the synchronous [`Generator`]:
//! a bounded admission gate (full -> [`SubmitError::QueueFull`]), a FIFO queue, one OS thread per
//! device that batches compatible jobs, a oneshot reply per job, and `catch_unwind` around every
//! generator call so a failing or panicking job never takes the worker down.
//!
//! ```text
//! submit ─▶ Semaphore::try_acquire ─▶ queue (Mutex<VecDeque> + Condvar) ─▶ device thread(s)
//!              full: QueueFull{max}                                       │ batch by BatchKey
//!                                                                         ▼
//!   JobTicket (await) ◀──────────── oneshot reply ◀──── generate_batch (panics caught)
//! ```
//!
//! [`Generator`]: headshot_core::Generator

mod batch;
mod config;
mod error;
mod eta;
mod handle;
mod metrics_names;
mod thread;

pub use batch::BatchKey;
pub use config::WorkerConfig;
pub use error::{SubmitError, WorkerError};
pub use handle::{JobResult, JobTicket, Worker, WorkerHandle};
pub use metrics_names::*;
