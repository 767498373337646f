//! The finish stage's identity work: score each image's likeness to the input face and, for
//! best-of-N jobs, keep the `samples` best, most alike first.

use headshot_core::{error_chain, GeneratedImage, LikenessScorer};

/// The images to store, with their scores and seeds (in the same order).
#[derive(Debug)]
pub struct Picked {
    pub images: Vec<GeneratedImage>,
    /// `None`: not scored (no scorer, or no identity to compare with).
    pub scores: Option<Vec<Option<f32>>>,
    /// Each image's own seed (best-of-N candidates), so it can be regenerated alone.
    pub seeds: Option<Vec<u64>>,
}

/// Scores every image against `identity` and keeps the `keep` best (a stable sort by score,
/// faceless images last, so equal scores keep their order). Without scores the first `keep`
/// images are kept. A scorer failure costs that image its score, never the job.
pub fn score_and_pick(
    id: u64,
    images: Vec<GeneratedImage>,
    seeds: Option<Vec<u64>>,
    identity: Option<&[f32]>,
    scorer: Option<&dyn LikenessScorer>,
    keep: usize,
) -> Picked {
    let scores = scorer
        .zip(identity)
        .map(|(scorer, identity)| score_all(id, scorer, identity, &images));
    let mut order: Vec<usize> = (0..images.len()).collect();
    if let Some(scores) = &scores {
        order.sort_by(|&a, &b| {
            let key = |i: usize| scores[i].unwrap_or(f32::NEG_INFINITY);
            key(b).total_cmp(&key(a))
        });
    }
    order.truncate(keep.max(1));
    let mut slots: Vec<Option<GeneratedImage>> = images.into_iter().map(Some).collect();
    Picked {
        images: order.iter().filter_map(|&i| slots[i].take()).collect(),
        scores: scores.map(|s| order.iter().map(|&i| s[i]).collect()),
        seeds: seeds.map(|s| order.iter().filter_map(|&i| s.get(i).copied()).collect()),
    }
}

fn score_all(
    id: u64,
    scorer: &dyn LikenessScorer,
    identity: &[f32],
    images: &[GeneratedImage],
) -> Vec<Option<f32>> {
    let started = std::time::Instant::now();
    let scores = images
        .iter()
        .map(|generated| match scorer.likeness(identity, &generated.image) {
            Ok(score) => score,
            Err(e) => {
                tracing::warn!(id, error = %error_chain(&e), "could not score the likeness of an image");
                None
            }
        })
        .collect();
    metrics::histogram!("headshot_likeness_seconds").record(started.elapsed().as_secs_f64());
    scores
}

#[cfg(test)]
mod tests {
    use super::*;
    use headshot_core::{GenerationError, RgbImage};

    /// Scores an image by its first byte / 100; byte 0 shows no face, byte 255 fails.
    struct ByFirstByte;

    impl LikenessScorer for ByFirstByte {
        fn likeness(&self, _: &[f32], image: &RgbImage) -> Result<Option<f32>, GenerationError> {
            match image.pixels[0] {
                0 => Ok(None),
                255 => Err(GenerationError::internal("scorer broke")),
                b => Ok(Some(f32::from(b) / 100.0)),
            }
        }
    }

    fn image(byte: u8) -> GeneratedImage {
        GeneratedImage {
            image: RgbImage {
                width: 1,
                height: 1,
                pixels: vec![byte, 0, 0],
            },
            nsfw: byte == 30,
        }
    }

    fn firsts(picked: &Picked) -> Vec<u8> {
        picked.images.iter().map(|i| i.image.pixels[0]).collect()
    }

    #[test]
    fn the_best_are_kept_most_alike_first_with_their_seeds_and_flags() {
        let images = vec![
            image(30),
            image(0),
            image(80),
            image(255),
            image(50),
            image(80),
        ];
        let seeds = Some(vec![10, 11, 12, 13, 14, 15]);
        let picked = score_and_pick(1, images, seeds, Some(&[1.0]), Some(&ByFirstByte), 4);
        assert_eq!(firsts(&picked), [80, 80, 50, 30]);
        assert_eq!(picked.seeds, Some(vec![12, 15, 14, 10]));
        assert_eq!(
            picked.scores,
            Some(vec![Some(0.8), Some(0.8), Some(0.5), Some(0.3)])
        );
        assert!(picked.images[3].nsfw, "flags travel with their image");

        // Faceless and unscorable images come last, in their order.
        let picked = score_and_pick(
            1,
            vec![image(0), image(255), image(20)],
            None,
            Some(&[1.0]),
            Some(&ByFirstByte),
            3,
        );
        assert_eq!(firsts(&picked), [20, 0, 255]);
        assert_eq!(picked.scores, Some(vec![Some(0.2), None, None]));
        assert_eq!(picked.seeds, None);
    }

    #[test]
    fn without_a_scorer_or_an_identity_the_first_are_kept_unscored() {
        for (identity, scorer) in [
            (None, Some(&ByFirstByte as &dyn LikenessScorer)),
            (Some(&[1.0][..]), None),
        ] {
            let picked = score_and_pick(
                1,
                vec![image(10), image(90), image(50)],
                None,
                identity,
                scorer,
                2,
            );
            assert_eq!(firsts(&picked), [10, 90]);
            assert_eq!(picked.scores, None);
        }
    }
}
