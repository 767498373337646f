//! Jobs with the reference settings (512x512, 21 steps, guidance 7.5, one sample), told apart
//! by their seed.

use headshot_core::{GenerationJob, JobSettings, PreparedFace, RgbImage};

pub fn settings(seed: u64) -> JobSettings {
    JobSettings {
        prompt: format!("portrait {seed}"),
        negative_prompt: String::new(),
        width: 512,
        height: 512,
        num_inference_steps: 21,
        guidance_scale: 7.5,
        s_scale: 1.0,
        samples: 1,
        seed,
        safety_checker: None,
        face_index: 0,
        candidates: 0,
        model: Default::default(),
    }
}

/// A job whose photo is three arbitrary bytes (the scripted preparer accepts them).
pub fn job(seed: u64) -> GenerationJob {
    GenerationJob {
        settings: settings(seed),
        face_image: vec![1, 2, 3],
        more_face_images: Vec::new(),
    }
}

/// A face as the prepare stage hands it on: a zero embedding and a grey crop.
pub(crate) fn prepared_face() -> PreparedFace {
    PreparedFace {
        // A unit vector, as ArcFace embeddings are.
        id_embedding: std::iter::once(1.0)
            .chain(std::iter::repeat_n(0.0, 511))
            .collect(),
        aligned_224: RgbImage {
            width: 224,
            height: 224,
            pixels: vec![128; 224 * 224 * 3],
        },
        faces_found: 1,
        more_aligned_224: Vec::new(),
    }
}
