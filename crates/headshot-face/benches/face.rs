//! CPU cost of face analysis per photo: detection (resize + SCRFD + decoding + NMS) and
//! embedding (two aligned crops + ArcFace), on the buffalo_s pair fetched from PyPI.
//! `tools/face_goldens/time_onnxruntime.py` times insightface/onnxruntime on the same photos and
//! models for the ratio in benches/README.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use headshot_core::LikenessScorer;
use headshot_face::{decode_image, DecodeLimits};

fn face_analysis(c: &mut Criterion) {
    let analyzer = common::analyzer();
    let mut group = c.benchmark_group("face");
    group.sample_size(20);
    for photo in ["players", "gdp", "yaoming"] {
        let bytes =
            std::fs::read(common::assets_dir().join(format!("{photo}.jpg"))).expect("photo");
        let image = decode_image(&bytes, &DecodeLimits::default()).expect("decodes");
        let faces = analyzer.analyze_all(&image).expect("detection runs");
        let first = faces.first().expect("the photo has a face").clone();

        group.bench_function(format!("decode/{photo}"), |b| {
            b.iter(|| decode_image(black_box(&bytes), &DecodeLimits::default()).expect("decodes"))
        });
        group.bench_function(format!("detect/{photo}"), |b| {
            b.iter(|| {
                analyzer
                    .analyze_all(black_box(&image))
                    .expect("detection runs")
            })
        });
        group.bench_function(format!("embed_one_face/{photo}"), |b| {
            b.iter(|| {
                analyzer
                    .embed(black_box(&image), &first)
                    .expect("embedding runs")
            })
        });
        group.bench_function(format!("analyze_largest/{photo}"), |b| {
            b.iter(|| {
                analyzer
                    .analyze_largest(black_box(&bytes))
                    .expect("has a face")
            })
        });
    }
    group.finish();
}

/// The finish stage's cost per generated image: the likeness score of a 512x512 output
/// (detection, one 112 px crop, ArcFace, cosine), on the stand-in outputs of the likeness goldens.
fn likeness(c: &mut Criterion) {
    let analyzer = common::analyzer();
    let identity = analyzer
        .analyze_largest(&std::fs::read(common::assets_dir().join("yaoming.jpg")).expect("photo"))
        .expect("has a face")
        .embedding;
    let mut group = c.benchmark_group("face");
    group.sample_size(20);
    for output in ["likeness_yaoming_512", "likeness_tiny_output"] {
        let bytes =
            std::fs::read(common::goldens_dir().join(format!("{output}.png"))).expect("png");
        let image = decode_image(&bytes, &DecodeLimits::default()).expect("decodes");
        group.bench_function(format!("likeness/{output}"), |b| {
            b.iter(|| {
                analyzer
                    .likeness(black_box(&identity), black_box(&image))
                    .expect("scoring runs")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, face_analysis, likeness);
criterion_main!(benches);
