//! The denoising loop: DDIM over the batch, the UNet on `[uncond..., cond...]` rows under
//! classifier-free guidance, each image with its own guidance scale.

use candle_core::{DType, Tensor};
use headshot_core::StepObserver;
use headshot_models::ddim::DdimScheduler;
use headshot_models::unet::UNet2DConditionModel;

use crate::error::PipelineError;
use crate::Pipeline;

/// The latents after the loop, and after its first step when asked (for traces).
pub(crate) struct Denoised {
    pub latents: Tensor,
    pub after_step0: Option<Tensor>,
}

impl Pipeline {
    /// Runs `steps` DDIM steps from `latents` (`[n, C, h, w]`, f32) with `context` (`[2n, ..]`
    /// under CFG, unconditional rows first, else `[n, ..]`) and per-image `guidance` (`[n]`).
    /// `observer` hears of every step done and may stop the loop (`PipelineError::Cancelled`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn denoise(
        &self,
        unet: &UNet2DConditionModel,
        mut latents: Tensor,
        context: &Tensor,
        guidance: &[f32],
        steps: usize,
        cfg: bool,
        keep_step0: bool,
        observer: &dyn StepObserver,
    ) -> Result<Denoised, PipelineError> {
        let total = guidance.len();
        // Per-image guidance scale, broadcast over [C, h, w].
        let guidance = Tensor::from_slice(guidance, (total, 1, 1, 1), &self.device)
            .map_err(PipelineError::run("guidance"))?;
        let mut scheduler = DdimScheduler::from_config_json(&self.scheduler_config)
            .map_err(PipelineError::run("scheduler"))?;
        let timesteps = scheduler
            .set_timesteps(steps)
            .map_err(PipelineError::run("scheduler"))?;
        let mut after_step0 = None;
        for (i, &t) in timesteps.iter().enumerate() {
            let model_in = if cfg {
                Tensor::cat(&[&latents, &latents], 0).map_err(PipelineError::run("unet"))?
            } else {
                latents.clone()
            };
            let model_in = model_in
                .to_dtype(self.dtype)
                .map_err(PipelineError::run("unet"))?;
            let eps = unet
                .forward(&model_in, t as f64, context)
                .map_err(PipelineError::run("unet"))?
                .to_dtype(DType::F32)
                .map_err(PipelineError::run("unet"))?;
            let eps = if cfg {
                guide(&eps, &guidance, total).map_err(PipelineError::run("guidance"))?
            } else {
                eps
            };
            latents = scheduler
                .step(&eps, t, &latents)
                .map_err(PipelineError::run("scheduler"))?;
            if i == 0 && keep_step0 {
                after_step0 = Some(latents.clone());
            }
            tracing::debug!(step = i, timestep = t, "denoised");
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
