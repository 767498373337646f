//! What a job needs to run again after a restart: its normalised parameters and the face photo.
//! Kept beside the record from admission until the job finishes, so accepted work survives a
//! crash.

use serde::{Deserialize, Serialize};

use crate::generator::{CensorType, GenerationJob};

/// Every [`GenerationJob`] value except the face bytes, in a form stores can serialise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub num_inference_steps: u32,
    pub guidance_scale: f64,
    pub s_scale: f64,
    pub samples: u32,
    pub seed: u64,
    /// The censor type's wire name when the safety checker is on.
    pub safety_checker: Option<String>,
}

/// A job's inputs: parameters plus the encoded face photo (stored as raw bytes, not JSON).
#[derive(Clone, Debug, PartialEq)]
pub struct JobInput {
    pub params: JobParams,
    pub face_image: Vec<u8>,
}

impl JobInput {
    pub fn of(job: &GenerationJob) -> Self {
        JobInput {
            params: JobParams {
                prompt: job.prompt.clone(),
                negative_prompt: job.negative_prompt.clone(),
                width: job.width,
                height: job.height,
                num_inference_steps: job.num_inference_steps,
                guidance_scale: job.guidance_scale,
                s_scale: job.s_scale,
                samples: job.samples,
                seed: job.seed,
                safety_checker: job.safety_checker.map(|c| c.as_str().to_string()),
            },
            face_image: job.face_image.clone(),
        }
    }

    /// The job to hand the generator again; `Err` names what no longer parses.
    pub fn into_job(self) -> Result<GenerationJob, String> {
        let p = self.params;
        let safety_checker = p
            .safety_checker
            .map(|name| name.parse::<CensorType>())
            .transpose()?;
        Ok(GenerationJob {
            prompt: p.prompt,
            negative_prompt: p.negative_prompt,
            face_image: self.face_image,
            width: p.width,
            height: p.height,
            num_inference_steps: p.num_inference_steps,
            guidance_scale: p.guidance_scale,
            s_scale: p.s_scale,
            samples: p.samples,
            seed: p.seed,
            safety_checker,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_job() {
        let job = GenerationJob {
            prompt: "p".into(),
            negative_prompt: "n".into(),
            face_image: vec![1, 2, 3],
            width: 512,
            height: 768,
            num_inference_steps: 21,
            guidance_scale: 7.5,
            s_scale: 1.0,
            samples: 1,
            seed: u64::MAX,
            safety_checker: Some(CensorType::Pixelate),
        };
        let input = JobInput::of(&job);
        let json = serde_json::to_string(&input.params).unwrap();
        let params: JobParams = serde_json::from_str(&json).unwrap();
        let back = JobInput {
            params,
            face_image: input.face_image,
        };
        assert_eq!(back.into_job().unwrap(), job);
    }
}
