//! The denoising loop: the batch's sampler over the batch, the UNet on `[uncond..., cond...]`
//! rows under classifier-free guidance, each image with its own guidance scale.

use candle_core::{DType, Tensor};
use headshot_core::{ModelChoice, SchedulerName, StepObserver};
use headshot_models::schedulers::{sampler_from_config, Sampler};
use headshot_models::unet::UNet2DConditionModel;

use crate::base_model::BaseModel;
use crate::error::PipelineError;
use crate::noise::JobStepNoise;
use crate::Pipeline;

/// The latents after the loop, and after its first step when asked (for traces).
pub(crate) struct Denoised {
    pub latents: Tensor,
    pub after_step0: Option<Tensor>,
}

/// What one loop runs with besides the latents.
pub(crate) struct LoopInputs<'a> {
    /// The batch's UNet: the base one, or one with the batch's user LoRAs merged.
    pub unet: &'a UNet2DConditionModel,
    /// `[2n, ..]` under CFG, unconditional rows first, else `[n, ..]`.
    pub context: &'a Tensor,
    /// Per image, `[n]`.
    pub guidance: &'a [f32],
    pub steps: usize,
    pub cfg: bool,
    pub keep_step0: bool,
    /// Per job, in batch order; drawn from only by ancestral samplers.
    pub step_noise: Vec<JobStepNoise>,
}

impl BaseModel {
    /// The sampler of a batch's model choice (DDIM when none is named), configured from the
    /// model set's `scheduler_config.json`.
    pub(crate) fn sampler(&self, choice: &ModelChoice) -> Result<Box<dyn Sampler>, PipelineError> {
        let name = choice.scheduler.unwrap_or(SchedulerName::Ddim);
        sampler_from_config(name, &self.scheduler_config, choice.karras_sigmas).map_err(|e| {
            PipelineError::InvalidInput(format!(
                "the scheduler {name} cannot run with the model set {}: {e}",
                self.name
            ))
        })
    }
}

impl Pipeline {
    /// Runs the loop from `latents` (`[n, C, h, w]`, f32, unscaled Gaussian noise) with
    /// `sampler`. `observer` hears of every step done and may stop the loop
    /// (`PipelineError::Cancelled`).
    pub(crate) fn denoise(
        &self,
        latents: Tensor,
        mut sampler: Box<dyn Sampler>,
        mut inputs: LoopInputs<'_>,
        observer: &dyn StepObserver,
    ) -> Result<Denoised, PipelineError> {
        let steps = inputs.steps;
        let total = inputs.guidance.len();
        // Per-image guidance scale, broadcast over [C, h, w].
        let guidance = Tensor::from_slice(inputs.guidance, (total, 1, 1, 1), &self.device)
            .map_err(PipelineError::run("guidance"))?;
        let timesteps = sampler
            .set_timesteps(steps)
            .map_err(PipelineError::run("scheduler"))?;
        let mut latents =
            (latents * sampler.init_noise_sigma()).map_err(PipelineError::run("scheduler"))?;
        let mut after_step0 = None;
        for (i, &t) in timesteps.iter().enumerate() {
            let scaled = sampler
                .scale_model_input(&latents, i)
                .map_err(PipelineError::run("scheduler"))?;
            let model_in = if inputs.cfg {
                Tensor::cat(&[&scaled, &scaled], 0).map_err(PipelineError::run("unet"))?
            } else {
                scaled
            };
            let model_in = model_in
                .to_dtype(self.dtype)
                .map_err(PipelineError::run("unet"))?;
            let eps = inputs
                .unet
                .forward(&model_in, t, inputs.context)
                .map_err(PipelineError::run("unet"))?
                .to_dtype(DType::F32)
                .map_err(PipelineError::run("unet"))?;
            let eps = if inputs.cfg {
                guide(&eps, &guidance, total).map_err(PipelineError::run("guidance"))?
            } else {
                eps
            };
            let noise = if sampler.needs_noise() {
                let each = inputs
                    .step_noise
                    .iter_mut()
                    .map(|job| job.next(i, &self.device))
                    .collect::<candle_core::Result<Vec<_>>>()
                    .and_then(|each| Tensor::cat(&each, 0))
                    .map_err(PipelineError::run("scheduler"))?;
                Some(each)
            } else {
                None
            };
            latents = sampler
                .step(&eps, i, &latents, noise.as_ref())
                .map_err(PipelineError::run("scheduler"))?;
            if i == 0 && inputs.keep_step0 {
                after_step0 = Some(latents.clone());
            }
            tracing::debug!(step = i, timestep = t, sampler = %sampler.name(), "denoised");
            let done = i + 1;
            if observer.step_done(done, steps).is_break() {
                return Err(PipelineError::Cancelled { done, total: steps });
            }
        }
        Ok(Denoised {
            latents,
            after_step0,
        })
    }
}

/// `uncond + guidance * (cond - uncond)` over the two halves of the UNet output.
fn guide(eps: &Tensor, guidance: &Tensor, total: usize) -> candle_core::Result<Tensor> {
    let uncond = eps.narrow(0, 0, total)?;
    let cond = eps.narrow(0, total, total)?;
    let diff = (cond - &uncond)?;
    uncond + diff.broadcast_mul(guidance)?
}
