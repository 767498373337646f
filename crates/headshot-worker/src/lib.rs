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
//! ```
//! use headshot_core::{GenerationError, GenerationJob, GenerationOutput, Generator};
//! use headshot_worker::{SubmitError, Worker, WorkerConfig};
//!
//! struct Nothing;
//! impl Generator for Nothing {
//!     fn generate(&self, _job: &GenerationJob) -> Result<GenerationOutput, GenerationError> {
//!         Ok(GenerationOutput { images: Vec::new() })
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let worker = Worker::spawn(Box::new(Nothing), WorkerConfig { queue_size: 8, ..Default::default() })?;
//! # let job = GenerationJob { prompt: "p".into(), negative_prompt: String::new(), face_image: Vec::new(),
//! #     width: 512, height: 512, num_inference_steps: 21, guidance_scale: 7.5, s_scale: 1.0,
//! #     samples: 1, seed: 1, safety_checker: None };
//! match worker.submit(job) {
//!     Ok(ticket) => {
//!         let eta = ticket.eta(); // for a `processing` answer if the wait times out
//!         let result = ticket.await; // or tokio::time::timeout(wait, &mut ticket)
//!         assert!(result.output.is_ok());
//!     }
//!     Err(SubmitError::QueueFull { max, retry_after }) => { /* "Maximum {max} queued requests" */ }
//!     Err(SubmitError::ShuttingDown) => {}
//! }
//! worker.shutdown().await;
//! # Ok::<(), headshot_worker::WorkerError>(())
//! # }).unwrap();
//! ```
//!
//! [`Generator`]: headshot_core::Generator

// Panics in the generator are caught per job; with `panic = "abort"` one bad job would kill
// the server instead, so refuse to build that way.
#[cfg(panic = "abort")]
compile_error!("headshot-worker needs panic = \"unwind\" (it catches generator panics per job)");

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
