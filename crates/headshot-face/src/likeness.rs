//! The analyzer as the finish stage's [`LikenessScorer`]: the largest face of a generated image,
//! embedded exactly as the input photo was, compared by cosine (insightface's `compute_sim`).

use headshot_core::{cosine_similarity, GenerationError, LikenessScorer, RgbImage};

use crate::analyzer::FaceAnalyzer;

impl LikenessScorer for FaceAnalyzer {
    fn likeness(&self, identity: &[f32], image: &RgbImage) -> Result<Option<f32>, GenerationError> {
        Ok(self
            .identity_of_largest(image)?
            .map(|embedding| cosine_similarity(identity, &embedding)))
    }
}
