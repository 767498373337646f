//! `EulerDiscreteScheduler` and `EulerAncestralDiscreteScheduler` (Karras et al. 2022's Euler
//! method on the sigma ODE; the ancestral one adds fresh noise every step). Timesteps are
//! fractional: the UNet is given `np.linspace(0, T - 1, n)` (or the Karras sigmas' timesteps)
//! as f32, and the sigmas are interpolated from the training table.

use candle_core::{bail, Result, Tensor};
use headshot_core::SchedulerName;

use super::schedule::{
    check_steps, interp, karras_sigmas, np_arange_down, np_linspace, sigma_to_t, train_sigmas,
    PredictionType, TimestepSpacing,
};
use super::sigma_config::{unsupported, SigmaConfig};
use super::{Sampler, SchedulerError};

/// The schedule both Euler samplers share: timesteps and sigmas (steps + 1, the last final).
#[derive(Debug, Clone)]
struct EulerSchedule {
    config: SigmaConfig,
    /// Ascending with t, f32 as torch computes it.
    train_sigmas: Vec<f32>,
    timesteps: Vec<f32>,
    sigmas: Vec<f32>,
}

impl EulerSchedule {
    fn new(config: SigmaConfig, class: &str) -> std::result::Result<Self, SchedulerError> {
        config.refuse_unimplemented(class)?;
        if config.interpolation_type != "linear" {
            return Err(unsupported(
                "interpolation_type",
                &config.interpolation_type,
            ));
        }
        if config.timestep_type == "continuous"
            && config.prediction_type == PredictionType::VPrediction
        {
            return Err(unsupported("timestep_type", "continuous with v_prediction"));
        }
        let train_sigmas = train_sigmas(&config.train_schedule().sigma_alphas_cumprod()?);
        config.final_sigma_zero()?;
        Ok(Self {
            config,
            train_sigmas,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }

    /// The spacing's timesteps as numpy computes them (then f32).
    fn spaced_timesteps(&self, n: usize) -> Vec<f32> {
        let train = self.config.num_train_timesteps;
        match self.config.timestep_spacing {
            TimestepSpacing::Linspace => np_linspace(0.0, (train - 1) as f64, n)
                .into_iter()
                .rev()
                .map(|t| t as f32)
                .collect(),
            TimestepSpacing::Leading => {
                let ratio = train / n;
                (0..n)
                    .rev()
                    .map(|i| (i * ratio) as f32 + self.config.steps_offset as f32)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                np_arange_down(train as f64, 0.0, -(train as f64 / n as f64))
                    .into_iter()
                    .map(|t| super::schedule::round_half_even(t) as f32 - 1.0)
                    .collect()
            }
        }
    }

    fn set_timesteps(
        &mut self,
        n: usize,
        karras: bool,
    ) -> std::result::Result<Vec<f64>, SchedulerError> {
        check_steps(n, self.config.num_train_timesteps)?;
        let mut timesteps = self.spaced_timesteps(n);
        let max = (self.config.num_train_timesteps - 1) as f32;
        if let Some(bad) = timesteps.iter().find(|&&t| !(0.0..=max).contains(&t)) {
            return Err(SchedulerError::Unsupported(format!(
                "timestep {bad} from steps_offset {} is outside 0..{}",
                self.config.steps_offset, self.config.num_train_timesteps
            )));
        }
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| interp(t as f64, &self.train_sigmas))
            .collect();
        if karras {
            let sigma_min = self.config.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = self.config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(sigma_min, sigma_max, n);
            let log_sigmas: Vec<f32> = self.train_sigmas.iter().map(|s| s.ln()).collect();
            timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &log_sigmas) as f32)
                .collect();
        }
        let last = if self.config.final_sigma_zero()? {
            0.0
        } else {
            self.train_sigmas[0] as f64
        };
        sigmas.push(last);
        self.sigmas = sigmas.into_iter().map(|s| s as f32).collect();
        self.timesteps = timesteps;
        Ok(self.timesteps.iter().map(|&t| t as f64).collect())
    }

    fn init_noise_sigma(&self) -> f64 {
        // Before set_timesteps diffusers' sigmas are the whole table; after, the chosen ones.
        let max = if self.sigmas.is_empty() {
            self.train_sigmas.iter().copied().fold(0f32, f32::max)
        } else {
            self.sigmas.iter().copied().fold(0f32, f32::max)
        };
        match self.config.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
        }
    }

    fn sigma(&self, step_index: usize) -> Result<(f32, f32)> {
        match (self.sigmas.get(step_index), self.sigmas.get(step_index + 1)) {
            (Some(&s), Some(&next)) => Ok((s, next)),
            _ => bail!(
                "step {step_index} is outside the {} scheduled steps",
                self.timesteps.len()
            ),
        }
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        let (sigma, _) = self.sigma(step_index)?;
        sample / (sigma * sigma + 1.0).sqrt() as f64
    }

    /// The denoised estimate at `sigma`.
    fn pred_original(&self, model_output: &Tensor, sample: &Tensor, sigma: f32) -> Result<Tensor> {
        match self.config.prediction_type {
            PredictionType::Epsilon => sample - (model_output * sigma as f64)?,
            PredictionType::VPrediction => {
                let c_out = -sigma / (sigma * sigma + 1.0).sqrt();
                let c_skip = 1.0 / (sigma * sigma + 1.0);
                (model_output * c_out as f64)? + (sample * c_skip as f64)?
            }
            PredictionType::Sample => Ok(model_output.clone()),
        }
    }
}

/// `EulerDiscreteScheduler` (no churn: `s_churn` 0, as the pipelines call it).
#[derive(Debug, Clone)]
pub struct EulerDiscrete {
    schedule: EulerSchedule,
}

impl EulerDiscrete {
    pub fn new(config: SigmaConfig) -> std::result::Result<Self, SchedulerError> {
        Ok(Self {
            schedule: EulerSchedule::new(config, "EulerDiscreteScheduler")?,
        })
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.schedule.sigmas
    }
}

impl Sampler for EulerDiscrete {
    fn name(&self) -> SchedulerName {
        SchedulerName::EulerDiscrete
    }

    fn set_timesteps(&mut self, steps: usize) -> std::result::Result<Vec<f64>, SchedulerError> {
        let karras = self.schedule.config.karras();
        self.schedule.set_timesteps(steps, karras)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.schedule.init_noise_sigma()
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        self.schedule.scale_model_input(sample, step_index)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (sigma, next) = self.schedule.sigma(step_index)?;
        let pred = self.schedule.pred_original(model_output, sample, sigma)?;
        let derivative = ((sample - pred)? / sigma as f64)?;
        sample + (derivative * (next - sigma) as f64)?
    }
}

/// `EulerAncestralDiscreteScheduler`: an Euler step down to `sigma_down`, then noise of
/// `sigma_up` added back, the noise given by the caller (the job's seeded generator).
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscrete {
    schedule: EulerSchedule,
}

impl EulerAncestralDiscrete {
    pub fn new(config: SigmaConfig) -> std::result::Result<Self, SchedulerError> {
        if config.prediction_type == PredictionType::Sample {
            // diffusers raises NotImplementedError for it.
            return Err(unsupported(
                "prediction_type",
                "sample with EulerAncestralDiscreteScheduler",
            ));
        }
        if config.karras() {
            return Err(SchedulerError::Unsupported(
                "EulerAncestralDiscreteScheduler has no Karras sigmas".into(),
            ));
        }
        Ok(Self {
            schedule: EulerSchedule::new(config, "EulerAncestralDiscreteScheduler")?,
        })
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.schedule.sigmas
    }
}

impl Sampler for EulerAncestralDiscrete {
    fn name(&self) -> SchedulerName {
        SchedulerName::EulerAncestralDiscrete
    }

    fn set_timesteps(&mut self, steps: usize) -> std::result::Result<Vec<f64>, SchedulerError> {
        self.schedule.set_timesteps(steps, false)
    }

    fn init_noise_sigma(&self) -> f64 {
        self.schedule.init_noise_sigma()
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        self.schedule.scale_model_input(sample, step_index)
    }

    fn needs_noise(&self) -> bool {
        true
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let Some(noise) = noise else {
            bail!("EulerAncestralDiscreteScheduler::step needs noise")
        };
        let (sigma, next) = self.schedule.sigma(step_index)?;
        let pred = self.schedule.pred_original(model_output, sample, sigma)?;
        let sigma_up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
        let sigma_down = (next * next - sigma_up * sigma_up).sqrt();
        let derivative = ((sample - pred)? / sigma as f64)?;
        let prev = (sample + (derivative * (sigma_down - sigma) as f64)?)?;
        prev + (noise * sigma_up as f64)?
    }
}
