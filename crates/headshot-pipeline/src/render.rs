//! The device stage for one batch: every job checked and conditioned, one denoising loop over
//! all their images, one VAE decode, then each job's images through the safety checker.
//! Compatible jobs (equal `batch_key`) share the batch; each keeps its prompt, guidance,
//! `s_scale`, seed and face.

use candle_core::Tensor;
use headshot_core::{GeneratedImage, JobSettings, PreparedFace, StepObserver};

use crate::base_model::BaseModel;
use crate::conditioning::Conditioning;
use crate::decode::{to_cpu_f32, to_rgb_images};
use crate::denoise::LoopInputs;
use crate::error::PipelineError;
use crate::noise::JobStepNoise;
use crate::Pipeline;

/// How to render, beyond the jobs themselves. The default is the serving path: seeded noise,
/// no trace.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// Keep the intermediate values (parity tests, the CLI's debug output). Off when serving:
    /// the copies to the host cost time and memory on a GPU.
    pub trace: bool,
    /// Replaces the seeded noise: empty, or one tensor per job of
    /// `[samples, 4, height / 8, width / 8]`, any float dtype, any device.
    pub initial_latents: Vec<Tensor>,
    /// Replaces the seeded per-step noise of ancestral samplers: empty, or one tensor per job
    /// of `[steps, samples, 4, height / 8, width / 8]`.
    pub step_noise: Vec<Tensor>,
}

impl RenderOptions {
    pub fn traced() -> Self {
        RenderOptions {
            trace: true,
            ..RenderOptions::default()
        }
    }

    pub fn with_initial_latents(mut self, latents: Vec<Tensor>) -> Self {
        self.initial_latents = latents;
        self
    }

    pub fn with_step_noise(mut self, noise: Vec<Tensor>) -> Self {
        self.step_noise = noise;
        self
    }
}

/// Intermediate values of one job, f32 on the CPU, in diffusers' layouts (for parity tests and
/// debugging).
#[derive(Clone, Debug)]
pub struct RenderTrace {
    /// `[1, 77, D]` text embeddings of the prompt.
    pub prompt_embeds: Tensor,
    /// `[1, 77, D]` of the negative prompt (or ""), only under CFG.
    pub negative_prompt_embeds: Option<Tensor>,
    /// `[2n, 4, D]` under CFG (unconditional rows first, each repeated per sample) or `[n, 4, D]`.
    pub id_tokens: Tensor,
    /// `[n, 4, h, w]` the latents the loop started from.
    pub initial_latents: Tensor,
    pub latents_after_step0: Tensor,
    pub final_latents: Tensor,
    /// `[n, H, W, 3]` in [0, 1] before quantisation (diffusers' `output_type="np"`).
    pub image: Tensor,
}

/// The result of one job.
#[derive(Clone, Debug)]
pub struct RenderOutput {
    pub images: Vec<GeneratedImage>,
    /// Only when [`RenderOptions::trace`] was asked for.
    pub trace: Option<RenderTrace>,
}

impl Pipeline {
    /// Renders one job from an analysed face.
    pub fn render(
        &self,
        job: &JobSettings,
        face: &PreparedFace,
        options: &RenderOptions,
    ) -> Result<RenderOutput, PipelineError> {
        let mut out = self.render_batch(&[(job, face)], options)?;
        Ok(out.remove(0))
    }

    /// Renders compatible jobs (equal `batch_key`) in one UNet batch. Results are in input order.
    pub fn render_batch(
        &self,
        jobs: &[(&JobSettings, &PreparedFace)],
        options: &RenderOptions,
    ) -> Result<Vec<RenderOutput>, PipelineError> {
        self.render_batch_observed(jobs, options, &())
    }

    /// [`Pipeline::render_batch`] telling `observer` after every denoising step; when it says
    /// stop, the batch ends there with [`PipelineError::Cancelled`] (nothing is decoded).
    pub fn render_batch_observed(
        &self,
        jobs: &[(&JobSettings, &PreparedFace)],
        options: &RenderOptions,
        observer: &dyn StepObserver,
    ) -> Result<Vec<RenderOutput>, PipelineError> {
        let Some((first, _)) = jobs.first() else {
            return Ok(Vec::new());
        };
        // One model choice per batch (it is part of the batch key): its base model, sampler
        // and LoRA set.
        let base = self.base_model(first.model.model_id.as_deref())?;
        self.check_batch(&base, jobs, options)?;
        let sampler = base.sampler(&first.model)?;
        let total: usize = jobs.iter().map(|(job, _)| job.images()).sum();
        let cfg = first.uses_cfg();
        let steps = first.num_inference_steps as usize;
        let span = tracing::info_span!("render", jobs = jobs.len(), images = total, steps, cfg);
        let _enter = span.enter();

        // The LoRA set's models, or the base ones.
        let lora = self.lora_models(&base, &first.model.loras)?;
        let (unet, text_encoder) = match lora.as_deref() {
            Some(models) => (&models.unet, &models.text_encoder),
            None => (&base.unet, &base.text_encoder),
        };
        let conds = jobs
            .iter()
            .enumerate()
            .map(|(i, (job, face))| {
                self.condition(
                    &base,
                    text_encoder,
                    job,
                    face,
                    options.initial_latents.get(i),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let context = batch_context(&conds, cfg)?
            .to_dtype(self.dtype)
            .map_err(PipelineError::run("conditioning"))?;
        let initial: Vec<&Tensor> = conds.iter().map(|c| &c.latents).collect();
        let latents = Tensor::cat(&initial, 0).map_err(PipelineError::run("conditioning"))?;
        let guidance: Vec<f32> = jobs
            .iter()
            .flat_map(|(job, _)| std::iter::repeat_n(job.guidance_scale as f32, job.images()))
            .collect();

        let step_noise = jobs
            .iter()
            .enumerate()
            .map(|(i, (job, _))| match options.step_noise.get(i) {
                Some(given) => JobStepNoise::Given(given.clone()),
                None => {
                    let [_, c, h, w] = base.latent_shape(job);
                    JobStepNoise::seeded(job, [c, h, w])
                }
            })
            .collect();
        let inputs = LoopInputs {
            unet,
            context: &context,
            guidance: &guidance,
            steps,
            cfg,
            keep_step0: options.trace,
            step_noise,
        };
        let denoised = self.denoise(latents, sampler, inputs, observer)?;
        let images = base.decode_latents(&denoised.latents, self.dtype)?;
        let images_u8 = to_rgb_images(&images)?;

        let mut outputs = Vec::with_capacity(jobs.len());
        let mut offset = 0;
        for ((job, _), cond) in jobs.iter().zip(&conds) {
            let n = job.images();
            let rgb = images_u8[offset..offset + n].to_vec();
            let trace = if options.trace {
                Some(trace_of(cond, offset, n, &denoised, &images)?)
            } else {
                None
            };
            outputs.push(RenderOutput {
                images: self.apply_safety(rgb, job.safety_checker)?,
                trace,
            });
            offset += n;
        }
        Ok(outputs)
    }

    /// Every job within the limits, all with one batch key, the images within one batch, and
    /// injected latents (if any) one per job in the right shape.
    fn check_batch(
        &self,
        base: &BaseModel,
        jobs: &[(&JobSettings, &PreparedFace)],
        options: &RenderOptions,
    ) -> Result<(), PipelineError> {
        let limits = self.job_limits();
        let key = jobs[0].0.batch_key();
        for (job, _) in jobs {
            job.validate(&limits)
                .map_err(|e| PipelineError::InvalidInput(e.to_string()))?;
            if job.batch_key() != key {
                return Err(PipelineError::InvalidInput(format!(
                    "jobs in one batch need the same size, steps and CFG use; got {:?} and {:?}",
                    key,
                    job.batch_key()
                )));
            }
        }
        let total: usize = jobs.iter().map(|(job, _)| job.images()).sum();
        if total > self.limits.max_batch_images {
            return Err(PipelineError::InvalidInput(format!(
                "{total} images exceed the batch limit of {}",
                self.limits.max_batch_images
            )));
        }
        let latents = &options.initial_latents;
        if !latents.is_empty() && latents.len() != jobs.len() {
            return Err(PipelineError::InvalidInput(format!(
                "initial latents are given for {} of {} jobs",
                latents.len(),
                jobs.len()
            )));
        }
        let noise = &options.step_noise;
        if !noise.is_empty() && noise.len() != jobs.len() {
            return Err(PipelineError::InvalidInput(format!(
                "step noise is given for {} of {} jobs",
                noise.len(),
                jobs.len()
            )));
        }
        for ((job, _), noise) in jobs.iter().zip(noise) {
            let [n, c, h, w] = base.latent_shape(job);
            let expected = [job.num_inference_steps as usize, n, c, h, w];
            if noise.dims() != expected {
                return Err(PipelineError::InvalidInput(format!(
                    "step noise must be {expected:?} ([steps, samples, channels, height/8, width/8]), got {:?}",
                    noise.dims()
                )));
            }
        }
        for ((job, _), latents) in jobs.iter().zip(latents) {
            let expected = base.latent_shape(job);
            if latents.dims() != expected {
                return Err(PipelineError::InvalidInput(format!(
                    "initial latents must be {:?} ([samples, channels, height/8, width/8]), got {:?}",
                    expected,
                    latents.dims()
                )));
            }
        }
        Ok(())
    }
}

/// The UNet context of the batch in diffusers' layout: `[uncond rows of every image...,
/// cond rows...]` under CFG, else the cond rows.
fn batch_context(conds: &[Conditioning], cfg: bool) -> Result<Tensor, PipelineError> {
    let run = || PipelineError::run("conditioning");
    let cond: Vec<&Tensor> = conds.iter().map(|c| &c.cond_context).collect();
    let cond = Tensor::cat(&cond, 0).map_err(run())?;
    if !cfg {
        return Ok(cond);
    }
    let uncond: Vec<&Tensor> = conds
        .iter()
        .filter_map(|c| c.uncond_context.as_ref())
        .collect();
    let uncond = Tensor::cat(&uncond, 0).map_err(run())?;
    Tensor::cat(&[&uncond, &cond], 0).map_err(run())
}

/// One job's intermediate values: its rows `offset..offset + n` of the batch, on the host.
fn trace_of(
    cond: &Conditioning,
    offset: usize,
    n: usize,
    denoised: &crate::denoise::Denoised,
    images: &Tensor,
) -> Result<RenderTrace, PipelineError> {
    let collecting = || PipelineError::run("collecting results");
    let take = |t: &Tensor| {
        t.narrow(0, offset, n)
            .map_err(collecting())
            .and_then(|t| to_cpu_f32(&t))
    };
    let cond_tokens = cond
        .id_tokens_cond
        .repeat((n, 1, 1))
        .map_err(collecting())?;
    let id_tokens = match &cond.id_tokens_uncond {
        Some(uncond) => {
            let uncond = uncond.repeat((n, 1, 1)).map_err(collecting())?;
            Tensor::cat(&[&uncond, &cond_tokens], 0).map_err(collecting())?
        }
        None => cond_tokens,
    };
    let after_step0 = denoised.after_step0.as_ref().unwrap_or(&denoised.latents);
    Ok(RenderTrace {
        prompt_embeds: to_cpu_f32(&cond.prompt_embeds)?,
        negative_prompt_embeds: cond
            .negative_prompt_embeds
            .as_ref()
            .map(to_cpu_f32)
            .transpose()?,
        id_tokens: to_cpu_f32(&id_tokens)?,
        initial_latents: to_cpu_f32(&cond.latents)?,
        latents_after_step0: take(after_step0)?,
        final_latents: take(&denoised.latents)?,
        image: take(images)?,
    })
}
