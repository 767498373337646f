//! The likeness score of a generated image against insightface 0.7.3's `compute_sim` on the same
//! files (goldens from tools/face_goldens/make_likeness_goldens.py): a photo against itself, two
//! different people, stand-ins for generated head shots, a real output of the tiny set (noise,
//! no face) and a face-less picture. The identity is computed by our own analysis of the photo,
//! as the prepare stage does, so the whole chain is compared.

mod common;

use headshot_core::LikenessScorer;
use headshot_face::{decode_image, DecodeLimits};
use serde::Deserialize;

#[derive(Deserialize)]
struct Goldens {
    pairs: Vec<Pair>,
}

#[derive(Deserialize)]
struct Pair {
    identity: String,
    image: String,
    similarity: Option<f32>,
}

fn read(name: &str) -> Vec<u8> {
    let committed = common::goldens_dir().join(name);
    let path = if committed.is_file() {
        committed
    } else {
        common::assets_dir().join(name)
    };
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn likeness_scores_match_insightface_compute_sim() {
    let path = common::goldens_dir().join("likeness.json");
    let goldens: Goldens =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("likeness.json")).unwrap();
    assert!(goldens.pairs.len() >= 12, "the goldens hold every pair");
    let analyzer = common::analyzer();
    let mut worst = 0f32;
    for pair in &goldens.pairs {
        let identity = analyzer
            .analyze_largest(&read(&pair.identity))
            .unwrap_or_else(|e| panic!("{}: {e}", pair.identity))
            .embedding;
        let image = decode_image(&read(&pair.image), &DecodeLimits::default()).unwrap();
        let ours = analyzer.likeness(&identity, &image).unwrap();
        match (ours, pair.similarity) {
            (Some(ours), Some(theirs)) => {
                let diff = (ours - theirs).abs();
                worst = worst.max(diff);
                assert!(
                    diff <= 1e-4,
                    "{} vs {}: ours {ours}, insightface {theirs}",
                    pair.identity,
                    pair.image
                );
            }
            (None, None) => {}
            (ours, theirs) => panic!(
                "{} vs {}: ours {ours:?}, insightface {theirs:?}",
                pair.identity, pair.image
            ),
        }
    }
    println!("likeness vs insightface: worst |difference| {worst:e}");
}

#[test]
fn a_photo_scores_one_against_itself_and_low_against_another_person() {
    let analyzer = common::analyzer();
    let yaoming = read("likeness_yaoming_512.png");
    let identity = analyzer.analyze_largest(&yaoming).unwrap().embedding;
    let itself = decode_image(&yaoming, &DecodeLimits::default()).unwrap();
    let other = decode_image(&read("likeness_gdp_512.png"), &DecodeLimits::default()).unwrap();
    let same = analyzer.likeness(&identity, &itself).unwrap().unwrap();
    let different = analyzer.likeness(&identity, &other).unwrap().unwrap();
    assert!((same - 1.0).abs() < 1e-5, "{same}");
    assert!(different < 0.3, "{different}");
}
