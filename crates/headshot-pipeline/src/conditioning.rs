//! Encoding a job before the denoising loop: prompt and negative prompt through CLIP-L, the
//! face crop through the CLIP-H image encoder, and both with the id embedding through the
//! FaceID-PlusV2 projection into id tokens; then the UNet context (text tokens, id tokens).

use candle_core::{DType, Device, Tensor};
use headshot_core::{JobSettings, PreparedFace, RgbImage};
use headshot_models::clip_text::ClipTextEncoder;

use crate::base_model::BaseModel;
use crate::error::PipelineError;
use crate::noise;
use crate::Pipeline;

/// Per-job conditioning, computed once before the loop.
pub(crate) struct Conditioning {
    pub cond_context: Tensor,
    pub uncond_context: Option<Tensor>,
    pub prompt_embeds: Tensor,
    pub negative_prompt_embeds: Option<Tensor>,
    pub id_tokens_cond: Tensor,
    pub id_tokens_uncond: Option<Tensor>,
    pub latents: Tensor,
}

impl BaseModel {
    /// `[samples, channels, height / 8, width / 8]` of a job's latents.
    pub(crate) fn latent_shape(&self, job: &JobSettings) -> [usize; 4] {
        let channels = self.unet.config().in_channels;
        let factor = self.vae_scale_factor;
        [
            job.images(),
            channels,
            job.height as usize / factor,
            job.width as usize / factor,
        ]
    }

    /// The prompt's embeddings through `text_encoder` (this base's own, or a LoRA set's) under
    /// A1111's CLIP skip: `[1, 77, D]` in the model dtype.
    fn encode_prompt_with(
        &self,
        text_encoder: &ClipTextEncoder,
        prompt: &str,
        clip_skip: u8,
        device: &Device,
    ) -> Result<Tensor, PipelineError> {
        let ids = self.tokenizer.encode(prompt).map_err(|e| {
            PipelineError::InvalidInput(format!("the prompt could not be tokenised: {e}"))
        })?;
        let len = ids.len();
        let ids =
            Tensor::from_vec(ids, (1, len), device).map_err(PipelineError::run("tokenizer"))?;
        text_encoder
            .forward_clip_skip(&ids, clip_skip.max(1) as usize)
            .map_err(PipelineError::run("text encoder"))
    }
}

impl Pipeline {
    /// `last_hidden_state` of the default set's text encoder for one prompt: `[1, 77, D]` in
    /// the model dtype.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Tensor, PipelineError> {
        self.encode_prompt_clip_skip(prompt, 1)
    }

    /// The prompt's embeddings under A1111's CLIP skip (1: the last layer, 2: the one before,
    /// both through the final layer norm).
    pub fn encode_prompt_clip_skip(
        &self,
        prompt: &str,
        clip_skip: u8,
    ) -> Result<Tensor, PipelineError> {
        let base = &self.base;
        base.encode_prompt_with(&base.text_encoder, prompt, clip_skip, &self.device)
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

    /// The CLIP features of the face: of its crop, or, with several photos of the person, their
    /// mean over every crop (computed in f32).
    pub fn face_features(&self, face: &PreparedFace) -> Result<Tensor, PipelineError> {
        let first = self.face_image_features(&face.aligned_224)?;
        if face.more_aligned_224.is_empty() {
            return Ok(first);
        }
        let run = || PipelineError::run("image encoder");
        let mut sum = first.to_dtype(DType::F32).map_err(run())?;
        for crop in &face.more_aligned_224 {
            let features = self.face_image_features(crop)?;
            sum = (sum + features.to_dtype(DType::F32).map_err(run())?).map_err(run())?;
        }
        let count = (1 + face.more_aligned_224.len()) as f64;
        (sum / count)
            .and_then(|mean| mean.to_dtype(self.dtype))
            .map_err(run())
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

    fn id_embedding_tensor(&self, face: &PreparedFace) -> Result<Tensor, PipelineError> {
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

    /// Everything one job contributes to the batch; `initial_latents` replaces the seeded noise.
    pub(crate) fn condition(
        &self,
        base: &BaseModel,
        text_encoder: &ClipTextEncoder,
        job: &JobSettings,
        face: &PreparedFace,
        initial_latents: Option<&Tensor>,
    ) -> Result<Conditioning, PipelineError> {
        let n = job.images();
        let clip_skip = job.model.clip_skip;
        let prompt_embeds =
            base.encode_prompt_with(text_encoder, &job.prompt, clip_skip, &self.device)?;
        let id = self.id_embedding_tensor(face)?;
        let clip = self.face_features(face)?;
        let id_tokens_cond = self.id_tokens(&id, &clip, job.s_scale)?;
        let context = |text: &Tensor, tokens: &Tensor| -> Result<Tensor, PipelineError> {
            Tensor::cat(&[text, tokens], 1)
                .and_then(|c| c.repeat((n, 1, 1)))
                .map_err(PipelineError::run("conditioning"))
        };
        let cond_context = context(&prompt_embeds, &id_tokens_cond)?;
        let (negative_prompt_embeds, id_tokens_uncond, uncond_context) = if job.uses_cfg() {
            let negative = base.encode_prompt_with(
                text_encoder,
                &job.negative_prompt,
                clip_skip,
                &self.device,
            )?;
            let zeros = id
                .zeros_like()
                .map_err(PipelineError::run("conditioning"))?;
            let tokens = self.id_tokens(&zeros, &self.uncond_clip_features, job.s_scale)?;
            let ctx = context(&negative, &tokens)?;
            (Some(negative), Some(tokens), Some(ctx))
        } else {
            (None, None, None)
        };
        let shape = base.latent_shape(job);
        let latents = match initial_latents {
            Some(latents) => latents
                .to_device(&self.device)
                .and_then(|l| l.to_dtype(DType::F32)),
            None => match job.image_seeds() {
                // Candidates: one noise stream per image, so each can be regenerated alone.
                Some(seeds) => seeds
                    .iter()
                    .map(|&seed| {
                        noise::initial_latents(seed, 1, shape[1], shape[2], shape[3], &self.device)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()
                    .and_then(|each| Tensor::cat(&each, 0)),
                None => noise::initial_latents(
                    job.seed,
                    shape[0],
                    shape[1],
                    shape[2],
                    shape[3],
                    &self.device,
                ),
            },
        }
        .map_err(PipelineError::run("conditioning"))?;
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
}
