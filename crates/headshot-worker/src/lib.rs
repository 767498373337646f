//! The worker owns concurrency between the HTTP server and the synchronous model stages: a
//! bounded admission gate (full -> [`SubmitError::QueueFull`]), the prepare stage (a small CPU
//! pool that checks each job and analyses its face photo), the device stage (one OS thread per
//! device, fed prepared jobs only, batching compatible ones), a oneshot reply per job, and
//! `catch_unwind` around every model call so a failing or panicking job never takes the
//! worker down. Each stage is its own module: `prepare.rs`, `device.rs`; `handle.rs` is the
//! async face, with each job's [`Progress`] (place in line, or denoising step reached) and
//! [`WorkerHandle::cancel`] (a waiting job never runs; a running one is answered at once and
//! its batch stops at the next step once none of its jobs is left).
//!
//! ```text
//! submit ─▶ Semaphore::try_acquire ─▶ prepare queue ─▶ prepare threads (FacePreparer)
//!              full: QueueFull{max}                      │ bad photo: answered here
//!                                                        ▼
//!                                     device queue ─▶ device thread(s), batch by batch_key
//!                                                        ▼
//!   JobTicket (await) ◀──────────── oneshot reply ◀──── generate_batch_observed
//!                                                        (panics caught; steps observed)
//! ```
//!
//! ```
//! use std::sync::Arc;
//! use headshot_core::{
//!     FacePreparer, GenerationError, GenerationJob, GenerationOutput, Generator, JobSettings,
//!     PreparedFace, PreparedJob, RgbImage,
//! };
//! use headshot_worker::{Stages, SubmitError, Worker, WorkerConfig};
//!
//! struct AnyFace;
//! impl FacePreparer for AnyFace {
//!     fn prepare_face(&self, _photo: &[u8], _index: usize) -> Result<PreparedFace, GenerationError> {
//!         let aligned_224 = RgbImage { width: 224, height: 224, pixels: vec![0; 224 * 224 * 3] };
//!         let id_embedding = vec![0.0; 512];
//!         Ok(PreparedFace { id_embedding, aligned_224, faces_found: 1, more_aligned_224: vec![] })
//!     }
//! }
//! struct Nothing;
//! impl Generator for Nothing {
//!     fn generate(&self, _job: &PreparedJob) -> Result<GenerationOutput, GenerationError> {
//!         Ok(GenerationOutput { images: Vec::new() })
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let stages = Stages::new(Arc::new(AnyFace), Box::new(Nothing));
//! let worker = Worker::spawn(stages, WorkerConfig { queue_size: 8, ..Default::default() })?;
//! # let settings = JobSettings { prompt: "p".into(), negative_prompt: String::new(),
//! #     width: 512, height: 512, num_inference_steps: 21, guidance_scale: 7.5, s_scale: 1.0,
//! #     samples: 1, seed: 1, safety_checker: None, face_index: 0,
//! #     candidates: 0, model: Default::default() };
//! # let job = GenerationJob { settings, face_image: Vec::new(), more_face_images: Vec::new() };
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
mod device;
mod error;
mod eta;
mod handle;
mod metrics_names;
mod panics;
mod prepare;
mod shared;

pub use config::WorkerConfig;
pub use error::{SubmitError, WorkerError};
pub use handle::{
    Cancelled, DeviceStatus, JobResult, JobTicket, Progress, Stages, Worker, WorkerHandle,
};
pub use metrics_names::*;
