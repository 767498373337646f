//! The one job type: produced once by normalising a request (`HeadShotRequest::to_job`), stored
//! with its record so it survives a restart, checked once against what the models allow, made
//! into a [`PreparedJob`] by the prepare stage and rendered by the device stage.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::generator::{GenerationError, RgbImage};
use crate::model_choice::ModelChoice;

/// A job as admitted: what to render and the face photo to take the identity from.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationJob {
    pub settings: JobSettings,
    /// The face photo as fetched/decoded from the request: encoded bytes (JPEG, PNG, WebP, ...).
    pub face_image: Vec<u8>,
    /// Further photos of the same person (`face_image` sent as a list); empty for one photo.
    pub more_face_images: Vec<Vec<u8>>,
}

/// Every value of a job except the photo; each is the one actually used (and echoed in
/// `meta`). Serialised as stored beside the job record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSettings {
    pub prompt: String,
    /// Used only under classifier-free guidance; empty means the unconditional prompt "".
    pub negative_prompt: String,
    pub width: u32,
    pub height: u32,
    pub num_inference_steps: u32,
    pub guidance_scale: f64,
    /// Shortcut scale of IP-Adapter FaceID PlusV2 ("weight of the face structure"), 0..=2.
    pub s_scale: f64,
    pub samples: u32,
    pub seed: u64,
    /// `None`: the safety checker is off. `Some(t)`: run it, censor flagged images with `t`.
    pub safety_checker: Option<CensorType>,
    /// Which face of the photo gives the identity, by size: 0 (the largest, the default), 1, ...
    /// Jobs stored before this field existed read as 0.
    #[serde(default)]
    pub face_index: u32,
    /// Best-of-N: how many images to generate, of which the `samples` most like the input face
    /// are returned. At most `samples` (0 in jobs stored before it existed): no selection.
    #[serde(default)]
    pub candidates: u32,
    /// The model set, LoRAs, scheduler and CLIP skip (`model_id`, `lora_model`, ...); jobs
    /// stored before these existed read as the defaults.
    #[serde(default)]
    pub model: ModelChoice,
}

/// What face analysis hands the device stage.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedFace {
    /// ArcFace embedding, L2-normalised (insightface `normed_embedding`), 512 values.
    pub id_embedding: Vec<f32>,
    /// The face aligned at 224 px (the CLIP image encoder's input).
    pub aligned_224: RgbImage,
    /// How many faces the photo shows (the chosen one among them).
    pub faces_found: usize,
    /// With several photos of the person: the 224 px crops of the further photos (their CLIP
    /// features are averaged with the first one's); empty for one photo.
    pub more_aligned_224: Vec<RgbImage>,
}

/// A job whose photo has been analysed: all the device stage needs.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedJob {
    pub settings: JobSettings,
    pub face: PreparedFace,
}

/// Jobs with equal keys can share one UNet batch: same latent size, same number of denoising
/// steps, either all with classifier-free guidance or all without it (the unconditional
/// branch doubles the batch, so it cannot be mixed), and the same weights and sampler.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BatchKey {
    pub width: u32,
    pub height: u32,
    pub num_inference_steps: u32,
    pub guided: bool,
    pub model: ModelChoice,
}

/// What a generator accepts; a job outside these is refused before its photo is analysed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobLimits {
    /// Images (samples summed over jobs) in one UNet batch; CFG doubles the UNet batch on top.
    pub max_batch_images: usize,
    pub max_width: u32,
    pub max_height: u32,
    pub max_steps: u32,
    pub max_samples: u32,
    /// A safety checker is loaded, so jobs may ask for it.
    pub safety_checker: bool,
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            max_batch_images: 4,
            max_width: 1024,
            max_height: 1024,
            max_steps: 100,
            max_samples: 4,
            safety_checker: true,
        }
    }
}

impl JobSettings {
    /// diffusers runs classifier-free guidance only when `guidance_scale > 1`.
    pub fn uses_cfg(&self) -> bool {
        self.guidance_scale > 1.0
    }

    pub fn batch_key(&self) -> BatchKey {
        BatchKey {
            width: self.width,
            height: self.height,
            num_inference_steps: self.num_inference_steps,
            guided: self.uses_cfg(),
            model: self.model.clone(),
        }
    }

    /// Images this job renders and adds to a batch: its samples, or its candidates when it
    /// picks the best of them (at least one, so an odd `samples: 0` cannot starve others).
    pub fn images(&self) -> usize {
        (self.samples.max(self.candidates) as usize).max(1)
    }

    /// More candidates are rendered than returned; the finish stage keeps the best.
    pub fn picks_best(&self) -> bool {
        self.candidates > self.samples
    }

    /// The seed of each rendered image's noise when it has one of its own: with candidates,
    /// image `i` starts from `seed + i`, so each can be regenerated alone (`seed` = its seed,
    /// `samples` 1). `None`: one noise stream from `seed` for all images (the default, as
    /// before; only the first image can then be regenerated alone).
    pub fn image_seeds(&self) -> Option<Vec<u64>> {
        self.picks_best().then(|| {
            (0..self.images() as u64)
                .map(|i| self.seed.wrapping_add(i))
                .collect()
        })
    }

    /// The one check of a job against what the models allow (`InvalidInput` says what is off).
    pub fn validate(&self, limits: &JobLimits) -> Result<(), GenerationError> {
        let invalid = |m: String| Err(GenerationError::InvalidInput(m));
        if self.width == 0
            || self.height == 0
            || !self.width.is_multiple_of(8)
            || !self.height.is_multiple_of(8)
        {
            return invalid(format!(
                "width and height must be positive multiples of 8, got {}x{}",
                self.width, self.height
            ));
        }
        if self.width > limits.max_width || self.height > limits.max_height {
            return invalid(format!(
                "{}x{} exceeds this server's limit of {}x{}",
                self.width, self.height, limits.max_width, limits.max_height
            ));
        }
        if self.num_inference_steps == 0 || self.num_inference_steps > limits.max_steps {
            return invalid(format!(
                "num_inference_steps must be 1..={}, got {}",
                limits.max_steps, self.num_inference_steps
            ));
        }
        if self.samples == 0 || self.samples > limits.max_samples {
            return invalid(format!(
                "samples must be 1..={}, got {}",
                limits.max_samples, self.samples
            ));
        }
        if self.samples as usize > limits.max_batch_images {
            return invalid(format!(
                "samples {} exceeds the batch limit of {} images",
                self.samples, limits.max_batch_images
            ));
        }
        if self.images() > limits.max_batch_images {
            return invalid(format!(
                "candidates {} exceed the batch limit of {} images",
                self.images(),
                limits.max_batch_images
            ));
        }
        if !self.guidance_scale.is_finite() || !self.s_scale.is_finite() {
            return invalid("guidance_scale and s_scale must be finite numbers".into());
        }
        if self.safety_checker.is_some() && !limits.safety_checker {
            return invalid(
                "the safety checker was requested but this server runs without one; send safety_checker \"no\"".into(),
            );
        }
        Ok(())
    }
}

/// Groups jobs that may share a UNet batch (equal [`BatchKey`]), in input order, each group
/// holding at most `max_images` images (a job larger than that goes alone). Returns indices.
pub fn plan_batches<'a>(
    jobs: impl IntoIterator<Item = &'a JobSettings>,
    max_images: usize,
) -> Vec<Vec<usize>> {
    let mut open: Vec<(BatchKey, Vec<usize>, usize)> = Vec::new();
    let mut done = Vec::new();
    for (index, job) in jobs.into_iter().enumerate() {
        let key = job.batch_key();
        let images = job.images();
        match open
            .iter_mut()
            .find(|(k, _, n)| *k == key && n + images <= max_images)
        {
            Some((_, members, n)) => {
                members.push(index);
                *n += images;
            }
            None => open.push((key, vec![index], images)),
        }
        // Close full groups so later jobs start new ones.
        let (full, rest): (Vec<_>, Vec<_>) =
            open.into_iter().partition(|(_, _, n)| *n >= max_images);
        done.extend(full.into_iter().map(|(_, members, _)| members));
        open = rest;
    }
    done.extend(open.into_iter().map(|(_, members, _)| members));
    done.sort_by_key(|members| members[0]);
    done
}

/// How a flagged (NSFW) image is replaced before it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum CensorType {
    Black,
    #[default]
    Blur,
    Pixelate,
    SensitiveContentText,
}

impl CensorType {
    pub const ALL: [CensorType; 4] = [
        CensorType::Black,
        CensorType::Blur,
        CensorType::Pixelate,
        CensorType::SensitiveContentText,
    ];

    /// The name used on the wire (`safety_checker_type`) and in stored jobs.
    pub fn as_str(self) -> &'static str {
        match self {
            CensorType::Black => "black",
            CensorType::Blur => "blur",
            CensorType::Pixelate => "pixelate",
            CensorType::SensitiveContentText => "sensitive_content_text",
        }
    }
}

impl fmt::Display for CensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CensorType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        CensorType::ALL
            .into_iter()
            .find(|c| c.as_str() == wanted)
            .ok_or_else(|| {
                format!("unknown safety_checker_type '{s}'; use black, blur, pixelate or sensitive_content_text")
            })
    }
}

impl Serialize for CensorType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CensorType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn settings(seed: u64, width: u32, samples: u32, guidance: f64) -> JobSettings {
        JobSettings {
            prompt: "p".into(),
            negative_prompt: String::new(),
            width,
            height: 512,
            num_inference_steps: 21,
            guidance_scale: guidance,
            s_scale: 1.0,
            samples,
            seed,
            safety_checker: None,
            face_index: 0,
            candidates: 0,
            model: Default::default(),
        }
    }

    #[test]
    fn batches_only_compatible_jobs_up_to_the_limit() {
        let mut other_steps = settings(4, 512, 1, 7.5);
        other_steps.num_inference_steps = 30;
        let jobs = [
            settings(0, 512, 1, 7.5), // 0
            settings(1, 512, 2, 5.0), // 1: same key as 0 (CFG on), different guidance
            settings(2, 512, 1, 1.0), // 2: no CFG -> own group
            settings(3, 768, 1, 7.5), // 3: other size
            other_steps,              // 4: other steps
            settings(5, 512, 2, 7.5), // 5: would make group {0,1} 5 images > 4
            settings(6, 512, 1, 1.0), // 6: joins 2
        ];
        let groups = plan_batches(&jobs, 4);
        assert_eq!(
            groups,
            vec![vec![0, 1], vec![2, 6], vec![3], vec![4], vec![5]]
        );
        let images = |g: &Vec<usize>| g.iter().map(|&i| jobs[i].samples).sum::<u32>();
        assert!(groups.iter().all(|g| images(g) <= 4));
    }

    #[test]
    fn the_batch_key_is_size_steps_and_guidance_on_or_off() {
        let a = settings(1, 512, 1, 7.5);
        assert_eq!(a.batch_key(), settings(2, 512, 3, 3.0).batch_key());
        assert_ne!(a.batch_key(), settings(1, 512, 1, 1.0).batch_key());
        assert_ne!(a.batch_key(), settings(1, 768, 1, 7.5).batch_key());
    }

    #[test]
    fn validation_names_what_is_out_of_bounds() {
        let limits = JobLimits {
            safety_checker: false,
            ..JobLimits::default()
        };
        let ok = settings(1, 512, 1, 7.5);
        assert_eq!(ok.validate(&limits), Ok(()));
        let refused = |s: JobSettings| match s.validate(&limits) {
            Err(GenerationError::InvalidInput(m)) => m,
            other => panic!("expected InvalidInput, got {other:?}"),
        };
        assert!(refused(settings(1, 516, 1, 7.5)).contains("multiples of 8"));
        assert!(refused(settings(1, 2048, 1, 7.5)).contains("limit of 1024x1024"));
        assert!(refused(settings(1, 512, 5, 7.5)).contains("samples must be 1..=4"));
        assert!(refused(JobSettings {
            guidance_scale: f64::NAN,
            ..ok.clone()
        })
        .contains("finite"));
        assert!(refused(JobSettings {
            safety_checker: Some(CensorType::Black),
            ..ok
        })
        .contains("without one"));
    }

    #[test]
    fn settings_are_stored_with_the_censor_type_by_its_wire_name() {
        let stored = JobSettings {
            safety_checker: Some(CensorType::SensitiveContentText),
            ..settings(u64::MAX, 512, 1, 7.5)
        };
        let json = serde_json::to_value(&stored).unwrap();
        assert_eq!(json["safety_checker"], "sensitive_content_text");
        assert_eq!(json["seed"], u64::MAX);
        let back: JobSettings = serde_json::from_value(json).unwrap();
        assert_eq!(back, stored);
        let mut unknown = serde_json::to_value(&back).unwrap();
        unknown["safety_checker"] = "sepia".into();
        let err = serde_json::from_value::<JobSettings>(unknown).unwrap_err();
        assert!(
            err.to_string().contains("unknown safety_checker_type"),
            "{err}"
        );
    }

    #[test]
    fn candidates_render_more_images_than_samples_within_the_batch_limit() {
        let plain = settings(7, 512, 2, 7.5);
        assert_eq!((plain.images(), plain.picks_best()), (2, false));
        let fewer = JobSettings {
            candidates: 1,
            ..plain.clone()
        };
        assert_eq!((fewer.images(), fewer.picks_best()), (2, false));
        assert_eq!(fewer.image_seeds(), None);
        let best_of = JobSettings {
            candidates: 4,
            ..plain.clone()
        };
        assert_eq!((best_of.images(), best_of.picks_best()), (4, true));
        assert_eq!(best_of.batch_key(), plain.batch_key());
        let limits = JobLimits::default();
        assert_eq!(best_of.validate(&limits), Ok(()));
        let too_many = JobSettings {
            candidates: 5,
            ..plain
        };
        assert!(matches!(
            too_many.validate(&limits),
            Err(GenerationError::InvalidInput(m)) if m == "candidates 5 exceed the batch limit of 4 images"
        ));
        let wraps = JobSettings {
            seed: u64::MAX,
            ..best_of
        };
        assert_eq!(wraps.image_seeds(), Some(vec![u64::MAX, 0, 1, 2]));
    }

    #[test]
    fn jobs_stored_before_face_index_existed_use_the_largest_face() {
        let stored = JobSettings {
            face_index: 2,
            ..settings(7, 512, 1, 7.5)
        };
        let mut json = serde_json::to_value(&stored).unwrap();
        assert_eq!(json["face_index"], 2);
        json.as_object_mut().unwrap().remove("face_index");
        json.as_object_mut().unwrap().remove("candidates");
        let back: JobSettings = serde_json::from_value(json).unwrap();
        assert_eq!((back.face_index, back.candidates), (0, 0));
    }
}
