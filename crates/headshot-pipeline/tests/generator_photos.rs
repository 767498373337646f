//! The `Generator` implementation end to end on the tiny set with the real buffalo_s face models
//! (fetched from PyPI by tools/fetch-test-assets.sh): photo -> largest face -> images, the error
//! kinds for photos without faces and for non-images, and batches mixing both.

mod common;

use common::{test_assets, tiny_with_faces, workspace};
use headshot_core::{
    CensorType, GenerationError, GenerationJob, GenerationOutput, Generator, JobSettings,
};
use headshot_pipeline::Pipeline;

fn job(photo: Vec<u8>, seed: u64, samples: u32) -> GenerationJob {
    GenerationJob {
        settings: JobSettings {
            prompt: "pretty woman".into(),
            negative_prompt: "blurry".into(),
            width: 128,
            height: 128,
            num_inference_steps: 3,
            guidance_scale: 7.5,
            s_scale: 1.0,
            samples,
            seed,
            safety_checker: Some(CensorType::Black),
            face_index: 0,
            candidates: 0,
            model: Default::default(),
        },
        face_image: photo,
        more_face_images: Vec::new(),
    }
}

/// The prepare stage, then the device stage, as the worker runs them.
fn generate(p: &Pipeline, job: GenerationJob) -> Result<GenerationOutput, GenerationError> {
    p.generate(&p.prepare(job)?)
}

/// Each job prepared; the prepared ones generated in one call; results in input order.
fn generate_all(
    p: &Pipeline,
    jobs: &[GenerationJob],
) -> Vec<Result<GenerationOutput, GenerationError>> {
    let prepared: Vec<_> = jobs.iter().map(|j| p.prepare(j.clone())).collect();
    let ready: Vec<_> = prepared
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let mut generated = p.generate_batch(&ready).into_iter();
    prepared
        .into_iter()
        .map(|r| match r {
            Ok(_) => generated.next().expect("one result per prepared job"),
            Err(e) => Err(e),
        })
        .collect()
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(test_assets().join(name)).unwrap()
}

#[test]
fn photo_to_images_and_error_kinds() {
    let p = tiny_with_faces();
    assert!(p.has_face_analyzer() && p.has_safety_checker());
    assert_eq!(p.max_batch_images(), 4);

    let out = generate(&p, job(photo("yaoming.jpg"), 3, 2)).unwrap();
    assert_eq!(out.images.len(), 2);
    for img in &out.images {
        assert_eq!((img.image.width, img.image.height), (128, 128));
        assert_eq!(img.image.pixels.len(), 128 * 128 * 3);
    }

    let no_face =
        std::fs::read(workspace().join("tests/fixtures/goldens/face/gradient_noface.png")).unwrap();
    assert_eq!(
        generate(&p, job(no_face, 1, 1)),
        Err(GenerationError::NoFace)
    );

    match generate(&p, job(b"definitely not an image".to_vec(), 1, 1)) {
        Err(GenerationError::UnreadableImage(_)) => {}
        other => panic!("expected UnreadableImage, got {other:?}"),
    }

    let mut too_big = job(photo("yaoming.jpg"), 1, 1);
    too_big.settings.width = 4096;
    assert!(matches!(
        generate(&p, too_big),
        Err(GenerationError::InvalidInput(_))
    ));
}

#[test]
fn generate_batch_keeps_order_and_isolates_failures() {
    let p = tiny_with_faces();
    let jobs = vec![
        job(photo("yaoming.jpg"), 7, 1),
        job(b"\x89PNG truncated".to_vec(), 1, 1),
        job(photo("gdp.jpg"), 8, 1),
    ];
    let results = generate_all(&p, &jobs);
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(
        results[1],
        Err(GenerationError::UnreadableImage(_))
    ));
    // A job's image does not depend on what it was batched with (up to float rounding: at most
    // one 8-bit step).
    let alone = generate(&p, jobs[0].clone()).unwrap();
    let batched = &results[0].as_ref().unwrap().images[0].image;
    let max_step = alone.images[0]
        .image
        .pixels
        .iter()
        .zip(&batched.pixels)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        max_step <= 1,
        "batched image differs from the single one by {max_step}/255"
    );
}
