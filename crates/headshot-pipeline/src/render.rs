//! From an analysed face and a prompt to images: encode once per job, denoise with DDIM and
//! classifier-free guidance, decode, post-process. Several compatible jobs share one UNet batch.

use candle_core::{DType, Device, Tensor};
use headshot_core::{CensorType, GeneratedImage, GenerationJob, RgbImage};
use headshot_models::ddim::DdimScheduler;

use crate::error::PipelineError;
use crate::noise;
use crate::Pipeline;

/// What to render: a `GenerationJob` minus the photo, plus optional injected latents.
#[derive(Clone, Debug)]
pub struct RenderRequest {
    pub prompt: String,
    /// Used only under CFG (guidance > 1); empty means the unconditional prompt "".
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub guidance_scale: f64,
    pub s_scale: f64,
    pub samples: u32,
    pub seed: u64,
    pub safety_checker: Option<CensorType>,
    /// Replaces the seeded noise: `[samples, 4, height / 8, width / 8]`, any float dtype, any device.
    pub initial_latents: Option<Tensor>,
}

impl RenderRequest {
    pub fn from_job(job: &GenerationJob) -> RenderRequest {
        RenderRequest {
            prompt: job.prompt.clone(),
            negative_prompt: job.negative_prompt.clone(),
            width: job.width,
            height: job.height,
            steps: job.num_inference_steps,
            guidance_scale: job.guidance_scale,
            s_scale: job.s_scale,
            samples: job.samples,
            seed: job.seed,
            safety_checker: job.safety_checker,
            initial_latents: None,
        }
    }

    /// diffusers runs classifier-free guidance only when `guidance_scale > 1`.
    pub fn uses_cfg(&self) -> bool {
        self.guidance_scale > 1.0
    }

    /// Jobs that can share one UNet batch: same size, same steps, same CFG-ness.
    pub fn batch_key(&self) -> BatchKey {
        (self.width, self.height, self.steps, self.uses_cfg())
    }
}

/// (width, height, steps, CFG on).
pub type BatchKey = (u32, u32, u32, bool);

/// An analysed face: what the pipeline needs from face analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct FaceInput {
    /// ArcFace embedding, L2-normalised (insightface `normed_embedding`), 512 values.
    pub id_embedding: Vec<f32>,
    /// The face aligned at 224 px (the CLIP image encoder's input).
    pub aligned_224: RgbImage,
}

impl From<headshot_face::AnalyzedFace> for FaceInput {
    fn from(face: headshot_face::AnalyzedFace) -> FaceInput {
        FaceInput {
            id_embedding: face.embedding,
            aligned_224: face.aligned_224,
        }
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
    pub trace: RenderTrace,
}

/// Per-job conditioning, computed once before the loop.
struct Conditioning {
    cond_context: Tensor,
    uncond_context: Option<Tensor>,
    prompt_embeds: Tensor,
    negative_prompt_embeds: Option<Tensor>,
    id_tokens_cond: Tensor,
    id_tokens_uncond: Option<Tensor>,
    latents: Tensor,
}

fn to_cpu_f32(t: &Tensor) -> Result<Tensor, PipelineError> {
    t.to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .map_err(PipelineError::run("copying results"))
}

impl Pipeline {
    /// Checks a request against the models and the limits.
    pub fn validate(&self, req: &RenderRequest) -> Result<(), PipelineError> {
        let limits = &self.limits;
        let invalid = |m: String| Err(PipelineError::InvalidInput(m));
        if req.width == 0 || req.height == 0 || req.width % 8 != 0 || req.height % 8 != 0 {
            return invalid(format!(
                "width and height must be positive multiples of 8, got {}x{}",
                req.width, req.height
            ));
        }
        if req.width > limits.max_width || req.height > limits.max_height {
            return invalid(format!(
                "{}x{} exceeds this server's limit of {}x{}",
                req.width, req.height, limits.max_width, limits.max_height
            ));
        }
        if req.steps == 0 || req.steps > limits.max_steps {
            return invalid(format!(
                "num_inference_steps must be 1..={}, got {}",
                limits.max_steps, req.steps
            ));
        }
        if req.samples == 0 || req.samples > limits.max_samples {
            return invalid(format!(
                "samples must be 1..={}, got {}",
                limits.max_samples, req.samples
            ));
        }
        if req.samples as usize > limits.max_batch_images {
            return invalid(format!(
                "samples {} exceeds the batch limit of {} images",
                req.samples, limits.max_batch_images
            ));
        }
        if !req.guidance_scale.is_finite() || !req.s_scale.is_finite() {
            return invalid("guidance_scale and s_scale must be finite numbers".into());
        }
        if req.safety_checker.is_some() && self.safety.is_none() {
            return invalid(
                "the safety checker was requested but this server runs without one; send safety_checker \"no\"".into(),
            );
        }
        if let Some(latents) = &req.initial_latents {
            let expected = self.latent_shape(req);
            if latents.dims() != expected {
                return invalid(format!(
                    "initial latents must be {:?} ([samples, channels, height/8, width/8]), got {:?}",
                    expected,
                    latents.dims()
                ));
            }
        }
        Ok(())
    }

    fn latent_shape(&self, req: &RenderRequest) -> [usize; 4] {
        let channels = self.unet.config().in_channels;
        let factor = self.vae_downscale();
        [
            req.samples as usize,
            channels,
            req.height as usize / factor,
            req.width as usize / factor,
        ]
    }

    /// Pixel size of one latent cell (8 for SD1.5).
    fn vae_downscale(&self) -> usize {
        self.vae_scale_factor
    }

    /// `last_hidden_state` of the text encoder for one prompt: `[1, 77, D]` in the model dtype.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Tensor, PipelineError> {
        let ids = self.tokenizer.encode(prompt).map_err(|e| {
            PipelineError::InvalidInput(format!("the prompt could not be tokenised: {e}"))
        })?;
        let len = ids.len();
        let ids = Tensor::from_vec(ids, (1, len), &self.device)
            .map_err(PipelineError::run("tokenizer"))?;
        self.text_encoder
            .forward(&ids)
            .map_err(PipelineError::run("text encoder"))
    }

    /// `hidden_states[-2]` of the image encoder for the aligned face crop: `[1, 257, H]`.
    pub fn face_image_features(&self, aligned_224: &RgbImage) -> Result<Tensor, PipelineError> {
        let pixels = self
            .face_processor
            .preprocess(std::slice::from_ref(aligned_224), &self.device)
            .map_err(|e| {
                PipelineError::InvalidInput(format!(
                    "the face crop could not be prepared for CLIP: {e}"
                ))
            })?
            .to_dtype(self.dtype)
            .map_err(PipelineError::run("image encoder"))?;
        self.image_encoder
            .penultimate_hidden_states(&pixels)
            .map_err(PipelineError::run("image encoder"))
    }

    /// The features of the all-zero pixel tensor (the unconditional CLIP input), computed at load.
    pub fn uncond_image_features(&self) -> &Tensor {
        &self.uncond_clip_features
    }

    /// FaceID-PlusV2 id tokens `[1, 4, D]` for an id embedding and CLIP features.
    pub fn id_tokens(
        &self,
        id_embedding: &Tensor,
        clip_features: &Tensor,
        s_scale: f64,
    ) -> Result<Tensor, PipelineError> {
        self.projection
            .forward(id_embedding, clip_features, s_scale)
            .map_err(PipelineError::run("face projection"))
    }

    fn id_embedding_tensor(&self, face: &FaceInput) -> Result<Tensor, PipelineError> {
        let expected = self.projection.config().id_embedding_dim;
        if face.id_embedding.len() != expected {
            return Err(PipelineError::InvalidInput(format!(
                "the face id embedding has {} values, the adapter expects {expected}",
                face.id_embedding.len()
            )));
        }
        if face.id_embedding.iter().any(|v| !v.is_finite()) {
            return Err(PipelineError::InvalidInput(
                "the face id embedding contains NaN or infinity".into(),
            ));
        }
        Tensor::from_slice(&face.id_embedding, (1, expected), &self.device)
            .and_then(|t| t.to_dtype(self.dtype))
            .map_err(PipelineError::run("face projection"))
    }

    fn condition(
        &self,
        req: &RenderRequest,
        face: &FaceInput,
    ) -> Result<Conditioning, PipelineError> {
        let n = req.samples as usize;
        let cfg = req.uses_cfg();
        let prompt_embeds = self.encode_prompt(&req.prompt)?;
        let id = self.id_embedding_tensor(face)?;
        let clip = self.face_image_features(&face.aligned_224)?;
        let id_tokens_cond = self.id_tokens(&id, &clip, req.s_scale)?;
        let run = PipelineError::run("conditioning");
        let context = |text: &Tensor, tokens: &Tensor| -> Result<Tensor, PipelineError> {
            Tensor::cat(&[text, tokens], 1)
                .and_then(|c| c.repeat((n, 1, 1)))
                .map_err(PipelineError::run("conditioning"))
        };
        let cond_context = context(&prompt_embeds, &id_tokens_cond)?;
        let (negative_prompt_embeds, id_tokens_uncond, uncond_context) = if cfg {
            let negative = self.encode_prompt(&req.negative_prompt)?;
            let zeros = id
                .zeros_like()
                .map_err(PipelineError::run("conditioning"))?;
            let tokens = self.id_tokens(&zeros, &self.uncond_clip_features, req.s_scale)?;
            let ctx = context(&negative, &tokens)?;
            (Some(negative), Some(tokens), Some(ctx))
        } else {
            (None, None, None)
        };
        let shape = self.latent_shape(req);
        let latents = match &req.initial_latents {
            Some(latents) => latents
                .to_device(&self.device)
                .and_then(|l| l.to_dtype(DType::F32)),
            None => noise::initial_latents(
                req.seed,
                shape[0],
                shape[1],
                shape[2],
                shape[3],
                &self.device,
            ),
        }
        .map_err(run)?;
        Ok(Conditioning {
            cond_context,
            uncond_context,
            prompt_embeds,
            negative_prompt_embeds,
            id_tokens_cond,
            id_tokens_uncond,
            latents,
        })
    }

    /// Renders one job from an analysed face.
    pub fn render(
        &self,
        req: &RenderRequest,
        face: &FaceInput,
    ) -> Result<RenderOutput, PipelineError> {
        let mut out = self.render_batch(&[(req, face)])?;
        Ok(out.remove(0))
    }

    /// Renders compatible jobs (same `batch_key`) in one UNet batch, each with its own prompt,
    /// guidance, `s_scale`, seed and face. Results are in input order.
    pub fn render_batch(
        &self,
        jobs: &[(&RenderRequest, &FaceInput)],
    ) -> Result<Vec<RenderOutput>, PipelineError> {
        let Some((first, _)) = jobs.first() else {
            return Ok(Vec::new());
        };
        let key = first.batch_key();
        for (req, _) in jobs {
            self.validate(req)?;
            if req.batch_key() != key {
                return Err(PipelineError::InvalidInput(format!(
                    "jobs in one batch need the same size, steps and CFG use; got {:?} and {:?}",
                    key,
                    req.batch_key()
                )));
            }
        }
        let total: usize = jobs.iter().map(|(r, _)| r.samples as usize).sum();
        if total > self.limits.max_batch_images {
            return Err(PipelineError::InvalidInput(format!(
                "{total} images exceed the batch limit of {}",
                self.limits.max_batch_images
            )));
        }
        let cfg = first.uses_cfg();
        let steps = first.steps as usize;
        let span = tracing::info_span!("render", jobs = jobs.len(), images = total, steps, cfg);
        let _enter = span.enter();

        let conds = jobs
            .iter()
            .map(|(req, face)| self.condition(req, face))
            .collect::<Result<Vec<_>, _>>()?;

        // UNet batch layout (diffusers'): [uncond rows of every image..., cond rows...].
        let cond_ctx: Vec<&Tensor> = conds.iter().map(|c| &c.cond_context).collect();
        let mut context = Tensor::cat(&cond_ctx, 0).map_err(PipelineError::run("conditioning"))?;
        if cfg {
            let uncond_ctx: Vec<&Tensor> = conds
                .iter()
                .filter_map(|c| c.uncond_context.as_ref())
                .collect();
            let uncond = Tensor::cat(&uncond_ctx, 0).map_err(PipelineError::run("conditioning"))?;
            context =
                Tensor::cat(&[&uncond, &context], 0).map_err(PipelineError::run("conditioning"))?;
        }
        let context = context
            .to_dtype(self.dtype)
            .map_err(PipelineError::run("conditioning"))?;
        let initial: Vec<&Tensor> = conds.iter().map(|c| &c.latents).collect();
        let mut latents = Tensor::cat(&initial, 0).map_err(PipelineError::run("conditioning"))?;
        // Per-image guidance scale, broadcast over [C, h, w].
        let guidance: Vec<f32> = jobs
            .iter()
            .flat_map(|(req, _)| {
                std::iter::repeat_n(req.guidance_scale as f32, req.samples as usize)
            })
            .collect();
        let guidance = Tensor::from_vec(guidance, (total, 1, 1, 1), &self.device)
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
            let eps = self
                .unet
                .forward(&model_in, t as f64, &context)
                .map_err(PipelineError::run("unet"))?
                .to_dtype(DType::F32)
                .map_err(PipelineError::run("unet"))?;
            let eps = if cfg {
                let uncond = eps
                    .narrow(0, 0, total)
                    .map_err(PipelineError::run("guidance"))?;
                let cond = eps
                    .narrow(0, total, total)
                    .map_err(PipelineError::run("guidance"))?;
                let diff = (cond - &uncond).map_err(PipelineError::run("guidance"))?;
                (uncond
                    + diff
                        .broadcast_mul(&guidance)
                        .map_err(PipelineError::run("guidance"))?)
                .map_err(PipelineError::run("guidance"))?
            } else {
                eps
            };
            latents = scheduler
                .step(&eps, t, &latents)
                .map_err(PipelineError::run("scheduler"))?;
            if i == 0 {
                after_step0 = Some(latents.clone());
            }
            tracing::debug!(step = i, timestep = t, "denoised");
        }
        let after_step0 = after_step0.unwrap_or_else(|| latents.clone());

        let images = self.decode_latents(&latents)?;
        let images_u8 = to_rgb_images(&images)?;

        let mut outputs = Vec::with_capacity(jobs.len());
        let mut offset = 0;
        for ((req, _), cond) in jobs.iter().zip(conds) {
            let n = req.samples as usize;
            let take = |t: &Tensor| {
                t.narrow(0, offset, n)
                    .map_err(PipelineError::run("collecting results"))
                    .and_then(|t| to_cpu_f32(&t))
            };
            let id_tokens = match &cond.id_tokens_uncond {
                Some(uncond) => Tensor::cat(
                    &[
                        &uncond
                            .repeat((n, 1, 1))
                            .map_err(PipelineError::run("collecting results"))?,
                        &cond
                            .id_tokens_cond
                            .repeat((n, 1, 1))
                            .map_err(PipelineError::run("collecting results"))?,
                    ],
                    0,
                )
                .map_err(PipelineError::run("collecting results"))?,
                None => cond
                    .id_tokens_cond
                    .repeat((n, 1, 1))
                    .map_err(PipelineError::run("collecting results"))?,
            };
            let image = take(&images)?;
            let rgb = images_u8[offset..offset + n].to_vec();
            let generated = self.apply_safety(rgb, req.safety_checker)?;
            outputs.push(RenderOutput {
                images: generated,
                trace: RenderTrace {
                    prompt_embeds: to_cpu_f32(&cond.prompt_embeds)?,
                    negative_prompt_embeds: cond
                        .negative_prompt_embeds
                        .as_ref()
                        .map(to_cpu_f32)
                        .transpose()?,
                    id_tokens: to_cpu_f32(&id_tokens)?,
                    initial_latents: to_cpu_f32(&cond.latents)?,
                    latents_after_step0: take(&after_step0)?,
                    final_latents: take(&latents)?,
                    image,
                },
            });
            offset += n;
        }
        Ok(outputs)
    }

    /// VAE decode: `(vae.decode(latents / scaling_factor) / 2 + 0.5).clamp(0, 1)` as `[n, H, W, 3]`.
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor, PipelineError> {
        let run = PipelineError::run("vae");
        let scaled = (latents / self.vae_scaling_factor)
            .and_then(|l| l.to_dtype(self.dtype))
            .map_err(run)?;
        // The whole batch at once: our VAE's mid-block attention keeps samples apart (tested
        // against per-sample decodes in headshot-models).
        let decoded = self
            .vae
            .decode(&scaled)
            .map_err(PipelineError::run("vae"))?;
        ((decoded
            .to_dtype(DType::F32)
            .map_err(PipelineError::run("vae"))?
            / 2.0)
            .and_then(|x| x + 0.5)
            .and_then(|x| x.clamp(0f32, 1f32))
            .and_then(|x| x.permute((0, 2, 3, 1)))
            .and_then(|x| x.contiguous()))
        .map_err(PipelineError::run("vae"))
    }

    /// Runs the safety checker on the images when asked and censors the flagged ones.
    fn apply_safety(
        &self,
        images: Vec<RgbImage>,
        censor: Option<CensorType>,
    ) -> Result<Vec<GeneratedImage>, PipelineError> {
        let (Some(censor), Some((checker, processor))) = (censor, &self.safety) else {
            return Ok(images
                .into_iter()
                .map(|image| GeneratedImage { image, nsfw: false })
                .collect());
        };
        let pixels = processor
            .preprocess(&images, &self.device)
            .and_then(|p| Ok(p.to_dtype(self.dtype)?))
            .map_err(PipelineError::run("safety checker"))?;
        let verdicts = checker
            .check(&pixels)
            .map_err(PipelineError::run("safety checker"))?;
        crate::censor::apply_safety(images, &verdicts, censor)
            .map_err(PipelineError::run("censoring"))
    }
}

/// `[n, H, W, 3]` floats in [0, 1] to 8-bit images, rounding like diffusers' `numpy_to_pil`:
/// `(x * 255).round()` in float32, and numpy rounds halves to even.
pub fn to_rgb_images(images: &Tensor) -> Result<Vec<RgbImage>, PipelineError> {
    let run = PipelineError::run("converting images");
    let (n, h, w, c) = images.dims4().map_err(run)?;
    if c != 3 {
        return Err(PipelineError::Run {
            stage: "converting images",
            message: format!("expected 3 channels, got {c}"),
        });
    }
    let values = to_cpu_f32(images)?
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(PipelineError::run("converting images"))?;
    let per_image = h * w * 3;
    Ok((0..n)
        .map(|i| RgbImage {
            width: w as u32,
            height: h as u32,
            pixels: values[i * per_image..(i + 1) * per_image]
                .iter()
                .map(|v| (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8)
                .collect(),
        })
        .collect())
}
