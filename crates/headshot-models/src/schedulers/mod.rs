//! The samplers of the denoising loop behind one [`Sampler`] trait, each a diffusers scheduler
//! class rebuilt in Rust: `DDIMScheduler`, `DPMSolverMultistepScheduler` (DPM-Solver++ 2M),
//! `EulerDiscreteScheduler`, `EulerAncestralDiscreteScheduler` and `UniPCMultistepScheduler`.
//!
//! Each is configured from the model's `scheduler_config.json` the way diffusers'
//! `Class.from_config(config)` does: the keys the class takes are read, missing ones take the
//! class's own defaults, the rest (another class's keys, `_class_name`) are ignored. Options we
//! do not implement are refused with the key named, never ignored.

pub mod ddim;
mod dpm_solver;
mod euler;
pub mod schedule;
mod sigma_config;
mod unipc;

use std::path::{Path, PathBuf};

use candle_core::{Result, Tensor};
use headshot_core::SchedulerName;

pub use dpm_solver::DpmSolverMultistep;
pub use euler::{EulerAncestralDiscrete, EulerDiscrete};
pub use sigma_config::SigmaConfig;
pub use unipc::UniPcMultistep;

/// Errors while reading `scheduler/scheduler_config.json` or scheduling.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("cannot read scheduler config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("scheduler config is not valid JSON for this scheduler: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("scheduler config: {0}")]
    Unsupported(String),
    #[error(
        "{steps} inference steps requested; must be between 1 and num_train_timesteps ({train})"
    )]
    BadStepCount { steps: usize, train: usize },
}

/// One sampler of the denoising loop. The loop calls `set_timesteps` once, multiplies the
/// initial noise by `init_noise_sigma`, then per step `i`: the UNet on
/// `scale_model_input(sample, i)` at `timesteps[i]`, then `step(output, i, sample, noise)`.
/// Steps run in order (multistep solvers keep the previous outputs).
pub trait Sampler: Send + Sync {
    /// The diffusers class this sampler reproduces.
    fn name(&self) -> SchedulerName;

    /// Chooses the timesteps of `steps` inference steps and returns them in the order they run
    /// (the values the UNet is given; fractional for Euler's Karras sigmas).
    fn set_timesteps(&mut self, steps: usize) -> std::result::Result<Vec<f64>, SchedulerError>;

    /// The factor the initial Gaussian noise is multiplied by.
    fn init_noise_sigma(&self) -> f64;

    /// The UNet input at step `step_index` (the sigma samplers divide by `sqrt(sigma^2 + 1)`).
    fn scale_model_input(&self, sample: &Tensor, _step_index: usize) -> Result<Tensor> {
        Ok(sample.clone())
    }

    /// Whether `step` needs fresh Gaussian noise of the sample's shape (ancestral samplers).
    fn needs_noise(&self) -> bool {
        false
    }

    /// From `sample` at step `step_index` to the next sample, given the model output (guided
    /// already) and, for samplers that [`needs_noise`](Sampler::needs_noise), the noise.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor>;
}

/// The sampler `name` configured from `config_json` (a `scheduler_config.json` of any class),
/// with `use_karras_sigmas` overriding the file's when given. Karras sigmas on a class without
/// them (DDIM, Euler ancestral) are an error: diffusers would silently ignore them.
pub fn sampler_from_config(
    name: SchedulerName,
    config_json: &str,
    use_karras_sigmas: Option<bool>,
) -> std::result::Result<Box<dyn Sampler>, SchedulerError> {
    if use_karras_sigmas == Some(true) && !name.has_karras_sigmas() {
        return Err(SchedulerError::Unsupported(format!(
            "{name} has no Karras sigmas (they exist for {})",
            SchedulerName::karras_names()
        )));
    }
    let sigma_config = || SigmaConfig::from_json(config_json, use_karras_sigmas);
    Ok(match name {
        SchedulerName::Ddim => Box::new(ddim::DdimScheduler::from_config_json(config_json)?),
        SchedulerName::DpmSolverMultistep => Box::new(DpmSolverMultistep::new(sigma_config()?)?),
        SchedulerName::EulerDiscrete => Box::new(EulerDiscrete::new(sigma_config()?)?),
        SchedulerName::EulerAncestralDiscrete => {
            Box::new(EulerAncestralDiscrete::new(sigma_config()?)?)
        }
        SchedulerName::UniPcMultistep => Box::new(UniPcMultistep::new(sigma_config()?)?),
    })
}

pub(crate) fn read_config(path: &Path) -> std::result::Result<String, SchedulerError> {
    std::fs::read_to_string(path).map_err(|source| SchedulerError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `a * x + b * y` with scalar coefficients (the solvers' update rules).
pub(crate) fn lin2(a: f32, x: &Tensor, b: f32, y: &Tensor) -> Result<Tensor> {
    (x * a as f64)? + (y * b as f64)?
}
