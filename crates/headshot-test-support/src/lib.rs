//! What the crates' tests share instead of keeping copies: job builders with the reference
//! settings, test doubles of the two model stages (a scripted face preparer and a scripted
//! generator whose images say which job they belong to), and facts of the wire format. A
//! dev-dependency only.

mod assets;
mod faces;
mod gate;
mod generator;
mod jobs;
pub mod services;
#[cfg(feature = "single-file")]
pub mod single_file;
#[cfg(feature = "tensors")]
pub mod tensors;
pub mod wire;

pub use assets::{test_assets, workspace};
pub use faces::{scripted_likeness, ScriptedFaces, FACELESS_PHOTO, UNREADABLE_PHOTO};
pub use gate::{Gate, StepGate};
pub use generator::{seed_of, ScriptedGenerator, SCRIPTED_MODEL_SET};
pub use jobs::{job, settings};
