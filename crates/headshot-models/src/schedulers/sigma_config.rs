//! The `scheduler_config.json` keys of diffusers' sigma-based classes (DPM-Solver multistep,
//! Euler, Euler ancestral, UniPC). Their defaults agree wherever the classes share a key, so
//! one struct serves all four; each class reads its own keys and refuses options it lacks.

use serde::Deserialize;

use super::schedule::{BetaSchedule, PredictionType, TimestepSpacing, TrainSchedule};
use super::SchedulerError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SigmaConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub rescale_betas_zero_snr: bool,
    /// `null` in some saved configs; diffusers treats it as false.
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub use_lu_lambdas: Option<bool>,
    pub use_flow_sigmas: Option<bool>,
    pub use_dynamic_shifting: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    /// "zero" or "sigma_min".
    pub final_sigmas_type: Option<String>,
    pub thresholding: bool,
    pub solver_order: usize,
    /// DPM: midpoint | heun (bh1/bh2/logrho read as midpoint); UniPC: bh1 | bh2 (midpoint,
    /// heun, logrho read as bh2), as diffusers maps another class's value.
    pub solver_type: Option<String>,
    pub algorithm_type: String,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    /// `-Infinity` in saved configs (read as `null`).
    pub lambda_min_clipped: Option<f64>,
    pub variance_type: Option<String>,
    pub predict_x0: bool,
    pub disable_corrector: Vec<usize>,
    pub interpolation_type: String,
    pub timestep_type: String,
}

impl Default for SigmaConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            use_karras_sigmas: None,
            use_exponential_sigmas: None,
            use_beta_sigmas: None,
            use_lu_lambdas: None,
            use_flow_sigmas: None,
            use_dynamic_shifting: false,
            sigma_min: None,
            sigma_max: None,
            final_sigmas_type: None,
            thresholding: false,
            solver_order: 2,
            solver_type: None,
            algorithm_type: "dpmsolver++".into(),
            lower_order_final: true,
            euler_at_final: false,
            lambda_min_clipped: None,
            variance_type: None,
            predict_x0: true,
            disable_corrector: Vec::new(),
            interpolation_type: "linear".into(),
            timestep_type: "discrete".into(),
        }
    }
}

impl SigmaConfig {
    /// Reads a saved config; `use_karras_sigmas`, when given, replaces the file's value.
    pub fn from_json(json: &str, use_karras_sigmas: Option<bool>) -> Result<Self, SchedulerError> {
        // Python's json writes float('-inf') as -Infinity, which is not JSON.
        let json = json.replace("-Infinity", "null");
        let mut config: SigmaConfig = serde_json::from_str(&json)?;
        if use_karras_sigmas.is_some() {
            config.use_karras_sigmas = use_karras_sigmas;
        }
        Ok(config)
    }

    pub fn karras(&self) -> bool {
        self.use_karras_sigmas.unwrap_or(false)
    }

    pub(crate) fn train_schedule(&self) -> TrainSchedule<'_> {
        TrainSchedule {
            num_train_timesteps: self.num_train_timesteps,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            beta_schedule: self.beta_schedule,
            trained_betas: self.trained_betas.as_deref(),
            rescale_betas_zero_snr: self.rescale_betas_zero_snr,
        }
    }

    /// Whether the final sigma is 0 (`"zero"`, the default) rather than the smallest trained one.
    pub(crate) fn final_sigma_zero(&self) -> Result<bool, SchedulerError> {
        match self.final_sigmas_type.as_deref() {
            None | Some("zero") => Ok(true),
            Some("sigma_min") => Ok(false),
            Some(other) => Err(unsupported("final_sigmas_type", other)),
        }
    }

    /// Refuses the sigma schedules and options none of our classes implement.
    pub(crate) fn refuse_unimplemented(&self, class: &str) -> Result<(), SchedulerError> {
        let flags = [
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
            ("use_lu_lambdas", self.use_lu_lambdas),
            ("use_flow_sigmas", self.use_flow_sigmas),
            ("use_dynamic_shifting", Some(self.use_dynamic_shifting)),
            ("thresholding", Some(self.thresholding)),
        ];
        if let Some((key, _)) = flags.iter().find(|(_, v)| *v == Some(true)) {
            return Err(SchedulerError::Unsupported(format!(
                "\"{key}\": true is not supported for {class}"
            )));
        }
        Ok(())
    }
}

pub(crate) fn unsupported(key: &str, value: impl std::fmt::Display) -> SchedulerError {
    SchedulerError::Unsupported(format!("{key} {value} is not supported"))
}
