//! DDIM scheduler (eta = 0), reproducing diffusers' `DDIMScheduler` built with
//! `DDIMScheduler.from_config(scheduler_config.json)`: keys the file lacks take DDIM's defaults
//! (SD1.5 repos ship a PNDM config, whose shared keys carry over).
//!
//! Arithmetic follows torch's: betas and alphas in f32, the cumulative product accumulated in
//! f64 and stored per step in f32 (torch's CPU cumprod), per-step coefficients in f32.

use std::path::Path;

use candle_core::{Result, Tensor};
use serde::Deserialize;

use headshot_core::SchedulerName;

use super::schedule::{round_half_even, TrainSchedule};
pub use super::schedule::{BetaSchedule, PredictionType, TimestepSpacing};
use super::Sampler;
pub use super::SchedulerError;

/// The DDIM-relevant keys of a diffusers scheduler config (defaults: `DDIMScheduler`'s).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DdimConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub set_alpha_to_one: bool,
    pub steps_offset: usize,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub timestep_spacing: TimestepSpacing,
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            clip_sample: true,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            timestep_spacing: TimestepSpacing::Leading,
            rescale_betas_zero_snr: false,
        }
    }
}

impl DdimConfig {
    fn train_schedule(&self) -> TrainSchedule<'_> {
        TrainSchedule {
            num_train_timesteps: self.num_train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule: self.beta_schedule,
            trained_betas: self.trained_betas.as_deref(),
            rescale_betas_zero_snr: self.rescale_betas_zero_snr,
        }
    }

    /// The reference demo's scheduler (IP-Adapter FaceID examples).
    pub fn sd15_reference() -> Self {
        Self {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            clip_sample: false,
            set_alpha_to_one: false,
            steps_offset: 1,
            ..Self::default()
        }
    }
}

/// The DDIM sampler state: the noise schedule plus the current timestep grid.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: DdimConfig,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    num_inference_steps: usize,
    timesteps: Vec<usize>,
}

impl DdimScheduler {
    pub fn from_config_json(json: &str) -> std::result::Result<Self, SchedulerError> {
        Self::new(serde_json::from_str(json)?)
    }

    pub fn from_file(path: impl AsRef<Path>) -> std::result::Result<Self, SchedulerError> {
        let path = path.as_ref();
        let json = super::read_config(path)?;
        Self::from_config_json(&json)
    }

    pub fn new(config: DdimConfig) -> std::result::Result<Self, SchedulerError> {
        if config.thresholding {
            return Err(SchedulerError::Unsupported(
                "dynamic thresholding (\"thresholding\": true) is for pixel-space models and is not supported".into(),
            ));
        }
        let alphas_cumprod = config.train_schedule().alphas_cumprod()?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let mut scheduler = Self {
            config,
            alphas_cumprod,
            final_alpha_cumprod,
            num_inference_steps: 0,
            timesteps: Vec::new(),
        };
        // diffusers starts with the full training grid, descending.
        scheduler.timesteps = (0..scheduler.config.num_train_timesteps).rev().collect();
        Ok(scheduler)
    }

    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// The initial noise is not rescaled by DDIM.
    pub fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// Chooses the `n` timesteps to sample at (descending) and returns them.
    pub fn set_timesteps(&mut self, n: usize) -> std::result::Result<Vec<usize>, SchedulerError> {
        let train = self.config.num_train_timesteps;
        if n == 0 || n > train {
            return Err(SchedulerError::BadStepCount { steps: n, train });
        }
        let timesteps: Vec<i64> = match self.config.timestep_spacing {
            TimestepSpacing::Linspace => {
                // np.linspace(0, train - 1, n).round()[::-1]; numpy computes i * step (not
                // i * last / (n - 1)), which decides ties such as 499.5 vs 499.49999999999994.
                let last = (train - 1) as f64;
                let step = if n > 1 { last / (n - 1) as f64 } else { 0.0 };
                (0..n)
                    .rev()
                    .map(|i| {
                        let t = if n > 1 && i == n - 1 {
                            last
                        } else {
                            i as f64 * step
                        };
                        round_half_even(t) as i64
                    })
                    .collect()
            }
            TimestepSpacing::Leading => {
                let ratio = train / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio + self.config.steps_offset) as i64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                // np.round(np.arange(train, 0, -train / n)) - 1
                let ratio = train as f64 / n as f64;
                let mut out = Vec::with_capacity(n);
                let mut t = train as f64;
                let mut k = 0usize;
                while t > 0.0 {
                    out.push(round_half_even(t) as i64 - 1);
                    k += 1;
                    t = train as f64 - k as f64 * ratio;
                }
                out
            }
        };
        let max = train as i64 - 1;
        if let Some(bad) = timesteps.iter().find(|&&t| t < 0 || t > max) {
            return Err(SchedulerError::Unsupported(format!(
                "timestep {bad} from steps_offset {} is outside 0..{train}",
                self.config.steps_offset
            )));
        }
        self.num_inference_steps = n;
        self.timesteps = timesteps.into_iter().map(|t| t as usize).collect();
        Ok(self.timesteps.clone())
    }

    /// One deterministic DDIM step (eta = 0): from `sample` at `timestep` to the previous
    /// timestep, given the model output (epsilon, v or sample, per `prediction_type`).
    pub fn step(&self, model_output: &Tensor, timestep: usize, sample: &Tensor) -> Result<Tensor> {
        if self.num_inference_steps == 0 {
            candle_core::bail!("DdimScheduler::step called before set_timesteps");
        }
        let Some(&alpha_prod_t) = self.alphas_cumprod.get(timestep) else {
            candle_core::bail!(
                "timestep {timestep} is outside the training schedule 0..{}",
                self.alphas_cumprod.len()
            )
        };
        let prev =
            timestep as i64 - (self.config.num_train_timesteps / self.num_inference_steps) as i64;
        let alpha_prod_prev = if prev >= 0 {
            self.alphas_cumprod[prev as usize]
        } else {
            self.final_alpha_cumprod
        };
        let beta_prod_t = 1.0f32 - alpha_prod_t;
        let sqrt_alpha = alpha_prod_t.sqrt() as f64;
        let sqrt_beta = beta_prod_t.sqrt() as f64;

        let (pred_original, pred_epsilon) = match self.config.prediction_type {
            PredictionType::Epsilon => {
                let x0 = ((sample - (model_output * sqrt_beta)?)? / sqrt_alpha)?;
                (x0, model_output.clone())
            }
            PredictionType::Sample => {
                let eps = ((sample - (model_output * sqrt_alpha)?)? / sqrt_beta)?;
                (model_output.clone(), eps)
            }
            PredictionType::VPrediction => {
                let x0 = ((sample * sqrt_alpha)? - (model_output * sqrt_beta)?)?;
                let eps = ((model_output * sqrt_alpha)? + (sample * sqrt_beta)?)?;
                (x0, eps)
            }
        };
        let pred_original = if self.config.clip_sample {
            let r = self.config.clip_sample_range as f32;
            pred_original.clamp(-r, r)?
        } else {
            pred_original
        };
        let direction = (1.0f32 - alpha_prod_prev).sqrt() as f64;
        (pred_original * alpha_prod_prev.sqrt() as f64)? + (pred_epsilon * direction)?
    }
}

impl Sampler for DdimScheduler {
    fn name(&self) -> SchedulerName {
        SchedulerName::Ddim
    }

    fn set_timesteps(&mut self, steps: usize) -> std::result::Result<Vec<f64>, SchedulerError> {
        let timesteps = DdimScheduler::set_timesteps(self, steps)?;
        Ok(timesteps.into_iter().map(|t| t as f64).collect())
    }

    fn init_noise_sigma(&self) -> f64 {
        DdimScheduler::init_noise_sigma(self)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let Some(&t) = self.timesteps.get(step_index) else {
            candle_core::bail!("DDIM step {step_index} is past the last timestep")
        };
        DdimScheduler::step(self, model_output, t, sample)
    }
}
