//! Parity with insightface 0.7.3 on real photos: goldens from tools/face_goldens/make_face_goldens.py.
//! Tolerances (issue 4): same face count; bbox IoU >= 0.99; keypoints within 1 px; embedding
//! cosine >= 0.995; aligned crops within 2/255.

mod common;

use std::path::PathBuf;

use headshot_core::RgbImage;
use headshot_face::{decode_image, DecodeLimits, DetectedFace, FaceError};
use serde::Deserialize;

#[derive(Deserialize)]
struct Goldens {
    images: Vec<GoldenImage>,
}

#[derive(Deserialize)]
struct GoldenImage {
    name: String,
    file: String,
    width: u32,
    height: u32,
    faces: Vec<GoldenFace>,
}

#[derive(Deserialize)]
struct GoldenFace {
    bbox: [f32; 4],
    score: f32,
    kps: [[f32; 2]; 5],
    embedding: Vec<f32>,
    aligned_112: Option<String>,
    aligned_224: Option<String>,
}

fn goldens() -> Goldens {
    let path = common::goldens_dir().join("face_goldens.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("face_goldens.json parses")
}

fn image_path(golden: &GoldenImage) -> PathBuf {
    let derived = common::goldens_dir().join(&golden.file);
    if derived.is_file() {
        derived
    } else {
        common::assets_dir().join(&golden.file)
    }
}

fn read_png(name: &str) -> RgbImage {
    let bytes = std::fs::read(common::goldens_dir().join(name)).expect("golden crop exists");
    decode_image(&bytes, &DecodeLimits::default()).expect("golden crop decodes")
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.pixels
        .iter()
        .zip(&b.pixels)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// Our face matching a golden one: the best-IoU detection (order can differ on score ties).
fn best_match<'a>(ours: &'a [DetectedFace], golden: &GoldenFace) -> &'a DetectedFace {
    ours.iter()
        .max_by(|a, b| iou(&a.bbox, &golden.bbox).total_cmp(&iou(&b.bbox, &golden.bbox)))
        .expect("at least one detection")
}

#[test]
fn every_golden_image_matches_insightface() {
    let analyzer = common::analyzer();
    let goldens = goldens();
    assert!(
        goldens.images.len() >= 8,
        "goldens cover the photos and their variants"
    );
    let mut report = Vec::new();
    for golden in &goldens.images {
        let bytes = std::fs::read(image_path(golden)).expect("golden input image exists");
        let image = decode_image(&bytes, &DecodeLimits::default()).expect("golden input decodes");
        assert_eq!(
            (image.width, image.height),
            (golden.width, golden.height),
            "{}: decoded size",
            golden.name
        );

        let faces = analyzer.analyze_all(&image).expect("detection runs");
        assert_eq!(
            faces.len(),
            golden.faces.len(),
            "{}: number of faces",
            golden.name
        );

        let (mut worst_iou, mut worst_kp, mut worst_cos, mut worst_crop) = (1f32, 0f32, 1f64, 0u8);
        for (index, want) in golden.faces.iter().enumerate() {
            let got = best_match(&faces, want);
            let overlap = iou(&got.bbox, &want.bbox);
            assert!(
                overlap >= 0.99,
                "{} face {index}: bbox IoU {overlap} ({:?} vs {:?})",
                golden.name,
                got.bbox,
                want.bbox
            );
            assert!(
                (got.score - want.score).abs() < 0.01,
                "{} face {index}: score {} vs {}",
                golden.name,
                got.score,
                want.score
            );
            let kp_err = got
                .keypoints
                .iter()
                .zip(&want.kps)
                .map(|(a, b)| (a[0] - b[0]).hypot(a[1] - b[1]))
                .fold(0f32, f32::max);
            assert!(
                kp_err <= 1.0,
                "{} face {index}: keypoints off by {kp_err} px",
                golden.name
            );

            let analyzed = analyzer.embed(&image, got).expect("embedding runs");
            assert_eq!(analyzed.embedding.len(), 512);
            let norm: f64 = analyzed
                .embedding
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                (norm - 1.0).abs() < 1e-4,
                "embedding is L2-normalised, norm {norm}"
            );
            let cos = cosine(&analyzed.embedding, &want.embedding);
            assert!(
                cos >= 0.995,
                "{} face {index}: embedding cosine {cos}",
                golden.name
            );

            for (crop_name, ours, size) in [
                (&want.aligned_112, &analyzed.aligned_112, 112),
                (&want.aligned_224, &analyzed.aligned_224, 224),
            ] {
                if let Some(name) = crop_name {
                    assert_eq!((ours.width, ours.height), (size, size));
                    let diff = max_abs_diff(ours, &read_png(name));
                    assert!(
                        diff <= 2,
                        "{} face {index}: aligned {size} crop differs by {diff}/255",
                        golden.name
                    );
                    worst_crop = worst_crop.max(diff);
                }
            }
            worst_iou = worst_iou.min(overlap);
            worst_kp = worst_kp.max(kp_err);
            worst_cos = worst_cos.min(cos);
        }
        report.push(format!(
            "{:>18}: {:>2} faces, min IoU {worst_iou:.5}, max kp err {worst_kp:.4} px, min cos {worst_cos:.6}, max crop diff {worst_crop}",
            golden.name,
            faces.len()
        ));
    }
    println!("{}", report.join("\n"));
}

#[test]
fn largest_face_is_selected_by_area() {
    let analyzer = common::analyzer();
    let bytes = std::fs::read(common::assets_dir().join("players.jpg")).expect("players.jpg");
    let image = decode_image(&bytes, &DecodeLimits::default()).expect("decodes");
    let faces = analyzer.analyze_all(&image).expect("detection runs");
    let largest_area = faces.iter().map(DetectedFace::area).fold(0f32, f32::max);
    let chosen = analyzer
        .analyze_largest(&bytes)
        .expect("players.jpg has faces");
    let chosen_area = (chosen.bbox[2] - chosen.bbox[0]) * (chosen.bbox[3] - chosen.bbox[1]);
    assert_eq!(chosen_area, largest_area);
    assert_eq!(chosen.aligned_224.width, 224);
    assert_eq!(chosen.aligned_112.pixels.len(), 112 * 112 * 3);
}

#[test]
fn photo_without_a_face_is_a_no_face_error() {
    let bytes =
        std::fs::read(common::goldens_dir().join("gradient_noface.png")).expect("gradient image");
    match common::analyzer().analyze_largest(&bytes) {
        Err(FaceError::NoFace) => {}
        other => panic!("expected NoFace, got {other:?}"),
    }
}

/// `face_index` picks faces by size, largest first, each matching insightface's embedding of
/// that face; one past the last is refused with the count.
#[test]
fn face_index_picks_faces_by_size() {
    let analyzer = common::analyzer();
    let bytes = std::fs::read(common::assets_dir().join("players.jpg")).expect("players.jpg");
    let golden = goldens()
        .images
        .into_iter()
        .find(|g| g.name == "players")
        .expect("players in the goldens");
    let mut by_area: Vec<&GoldenFace> = golden.faces.iter().collect();
    by_area.sort_by(|a, b| area(&b.bbox).total_cmp(&area(&a.bbox)));

    let (largest, found) = analyzer.analyze_by_size(&bytes, 0).unwrap();
    assert_eq!(found, golden.faces.len());
    assert_eq!(largest, analyzer.analyze_largest(&bytes).unwrap());
    for index in [0, 1, 5, found - 1] {
        let (face, _) = analyzer.analyze_by_size(&bytes, index).unwrap();
        let cosine = headshot_core::cosine_similarity(&face.embedding, &by_area[index].embedding);
        assert!(
            cosine >= 0.995,
            "face {index}: cosine {cosine} with insightface's"
        );
    }
    match analyzer.analyze_by_size(&bytes, found) {
        Err(e @ FaceError::FaceIndexOutOfRange { .. }) => assert_eq!(
            e.to_string(),
            format!("face_index {found} is out of range: the photo shows {found} faces (0 is the largest)")
        ),
        other => panic!("expected FaceIndexOutOfRange, got {other:?}"),
    }
}

fn area(bbox: &[f32; 4]) -> f32 {
    (bbox[2] - bbox[0]) * (bbox[3] - bbox[1])
}

/// Several photos of one person (the prepare stage with the real analyzer): the identity is
/// the re-normalised mean of the embeddings, every crop goes on, one photo takes the
/// single-photo path bit for bit, and a face-less photo is named by its position.
#[test]
fn several_photos_of_one_person() {
    use headshot_core::{prepare_job, FacePreparer, GenerationError, GenerationJob, JobLimits};
    let analyzer = common::analyzer();
    let read = |name: &str| {
        let committed = common::goldens_dir().join(name);
        std::fs::read(if committed.is_file() {
            committed
        } else {
            common::assets_dir().join(name)
        })
        .unwrap()
    };
    let (yaoming, rotated) = (read("yaoming.jpg"), read("yaoming_exif6.jpg"));
    let job = |more: Vec<Vec<u8>>| GenerationJob {
        settings: headshot_test_support::settings(1),
        face_image: yaoming.clone(),
        more_face_images: more,
    };
    let limits = JobLimits::default();

    let single = prepare_job(job(Vec::new()), &limits, analyzer).unwrap();
    assert_eq!(single.face, analyzer.prepare_face(&yaoming, 0).unwrap());

    let both = prepare_job(job(vec![rotated.clone()]), &limits, analyzer).unwrap();
    let a = analyzer.analyze_largest(&yaoming).unwrap();
    let b = analyzer.analyze_largest(&rotated).unwrap();
    let mean: Vec<f64> = a
        .embedding
        .iter()
        .zip(&b.embedding)
        .map(|(x, y)| f64::from(*x) + f64::from(*y))
        .collect();
    let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
    for (got, want) in both.face.id_embedding.iter().zip(&mean) {
        assert!((f64::from(*got) - want / norm).abs() < 1e-6);
    }
    let length: f32 = both
        .face
        .id_embedding
        .iter()
        .map(|v| v * v)
        .sum::<f32>()
        .sqrt();
    assert!((length - 1.0).abs() < 1e-5);
    assert_eq!(both.face.aligned_224, a.aligned_224);
    assert_eq!(both.face.more_aligned_224, vec![b.aligned_224]);

    let faceless = read("gradient_noface.png");
    match prepare_job(job(vec![rotated, faceless]), &limits, analyzer) {
        Err(GenerationError::InvalidInput(message)) => assert!(
            message.starts_with("Face image 3 of 3 cannot be used: no face was detected"),
            "{message}"
        ),
        other => panic!("expected the third photo named, got {other:?}"),
    }
}
