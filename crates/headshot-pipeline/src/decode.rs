//! After the loop: VAE decode to `[0, 1]` floats, 8-bit images rounded as diffusers rounds
//! them, and the safety checker's verdicts (censoring the flagged images).

use candle_core::{DType, Device, Tensor};
use headshot_core::{CensorType, GeneratedImage, RgbImage};

use crate::base_model::BaseModel;
use crate::error::PipelineError;
use crate::Pipeline;

pub(crate) fn to_cpu_f32(t: &Tensor) -> Result<Tensor, PipelineError> {
    t.to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .map_err(PipelineError::run("copying results"))
}

impl Pipeline {
    /// The default set's VAE decode (see [`BaseModel::decode_latents`]).
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor, PipelineError> {
        self.base.decode_latents(latents, self.dtype)
    }
}

impl BaseModel {
    /// VAE decode: `(vae.decode(latents / scaling_factor) / 2 + 0.5).clamp(0, 1)` as `[n, H, W, 3]`.
    pub(crate) fn decode_latents(
        &self,
        latents: &Tensor,
        dtype: DType,
    ) -> Result<Tensor, PipelineError> {
        let scaled = (latents / self.vae_scaling_factor)
            .and_then(|l| l.to_dtype(dtype))
            .map_err(PipelineError::run("vae"))?;
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
}

impl Pipeline {
    /// Runs the safety checker on the images when asked and censors the flagged ones.
    pub(crate) fn apply_safety(
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
    let (n, h, w, c) = images
        .dims4()
        .map_err(PipelineError::run("converting images"))?;
    if c != 3 {
        return Err(PipelineError::run("converting images")(format!(
            "expected 3 channels, got {c}"
        )));
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
