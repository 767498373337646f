//! Determinism and batching on the tiny model set (CPU f32): the same seed gives the same image,
//! and jobs rendered together in one UNet batch give the images they give alone. Batching is not
//! bit-exact on the CPU (the GEMM kernels block a larger batch differently, so sums round
//! differently, ~1e-6 per UNet call); it stays within the parity tolerance of the goldens.

mod common;

use common::{golden_face_crop, max_abs_diff, tiny, trace};
use headshot_core::{JobSettings, PreparedFace};
use headshot_pipeline::RenderOptions;

fn face(seed: u32) -> PreparedFace {
    // A deterministic unit vector; any 512-d embedding is valid input to the projection.
    let mut id_embedding: Vec<f32> = (0..512u32)
        .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 - 500.0) / 500.0)
        .collect();
    let norm = id_embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
    id_embedding.iter_mut().for_each(|v| *v /= norm);
    PreparedFace {
        id_embedding,
        aligned_224: golden_face_crop(),
        faces_found: 1,
        more_aligned_224: Vec::new(),
    }
}

/// Small and short, so the test is about plumbing, not UNet cost.
fn request(seed: u64, guidance: f64, s_scale: f64, samples: u32, negative: &str) -> JobSettings {
    JobSettings {
        prompt: "pretty woman".into(),
        negative_prompt: negative.into(),
        width: 128,
        height: 192,
        num_inference_steps: 4,
        guidance_scale: guidance,
        s_scale,
        samples,
        seed,
        safety_checker: None,
        face_index: 0,
        candidates: 0,
        model: Default::default(),
    }
}

#[test]
fn same_seed_same_image_other_seed_other_image() {
    let p = tiny();
    let f = face(1);
    let a = p
        .render(&request(5, 7.5, 1.0, 1, ""), &f, &RenderOptions::traced())
        .unwrap();
    let b = p
        .render(&request(5, 7.5, 1.0, 1, ""), &f, &RenderOptions::traced())
        .unwrap();
    let c = p
        .render(&request(6, 7.5, 1.0, 1, ""), &f, &RenderOptions::traced())
        .unwrap();
    assert_eq!(
        a.images[0].image, b.images[0].image,
        "same seed must give the same pixels"
    );
    assert_eq!(max_abs_diff(&trace(&a).image, &trace(&b).image), 0.0);
    assert_ne!(
        a.images[0].image, c.images[0].image,
        "another seed must give another image"
    );
    assert_eq!(
        (a.images[0].image.width, a.images[0].image.height),
        (128, 192)
    );
}

#[test]
fn batched_jobs_match_single_jobs() {
    let p = tiny();
    let (fa, fb) = (face(1), face(2));
    let ra = request(11, 7.5, 1.0, 1, "");
    let rb = request(12, 5.0, 2.0, 2, "blurry, low quality");
    let alone_a = p.render(&ra, &fa, &RenderOptions::traced()).unwrap();
    let alone_b = p.render(&rb, &fb, &RenderOptions::traced()).unwrap();
    let together = p
        .render_batch(&[(&ra, &fa), (&rb, &fb)], &RenderOptions::traced())
        .unwrap();
    assert_eq!(together.len(), 2);
    let da = max_abs_diff(&trace(&alone_a).image, &trace(&together[0]).image);
    let db = max_abs_diff(&trace(&alone_b).image, &trace(&together[1]).image);
    let la = max_abs_diff(
        &trace(&alone_a).final_latents,
        &trace(&together[0]).final_latents,
    );
    let lb = max_abs_diff(
        &trace(&alone_b).final_latents,
        &trace(&together[1]).final_latents,
    );
    println!("batched vs single: image {da:.2e} / {db:.2e}, latents {la:.2e} / {lb:.2e}");
    assert!(
        da <= 2e-3 && db <= 2e-3,
        "batched images differ from single ones: {da}, {db}"
    );
    assert!(
        la <= 1e-3 && lb <= 1e-3,
        "batched latents differ from single ones: {la}, {lb}"
    );
    assert_eq!(together[1].images.len(), 2);
    // The two samples of job b start from different noise.
    assert_ne!(together[1].images[0].image, together[1].images[1].image);
}

/// Euler ancestral draws noise every step: each job from its own seed, so a seed gives the same
/// image alone or batched, and another seed another image.
#[test]
fn ancestral_noise_is_per_job_seeded() {
    use headshot_core::{ModelChoice, SchedulerName};
    let p = tiny();
    let euler_a = |seed| JobSettings {
        model: ModelChoice {
            scheduler: Some(SchedulerName::EulerAncestralDiscrete),
            ..ModelChoice::default()
        },
        ..request(seed, 7.5, 1.0, 1, "")
    };
    let (ra, rb) = (euler_a(21), euler_a(22));
    let (fa, fb) = (face(1), face(1));
    let alone_a = p.render(&ra, &fa, &RenderOptions::traced()).unwrap();
    let again_a = p.render(&ra, &fa, &RenderOptions::traced()).unwrap();
    assert_eq!(alone_a.images[0].image, again_a.images[0].image);
    let together = p
        .render_batch(&[(&rb, &fb), (&ra, &fa)], &RenderOptions::traced())
        .unwrap();
    let d = max_abs_diff(&trace(&alone_a).image, &trace(&together[1]).image);
    assert!(
        d <= 2e-3,
        "the batched Euler a job differs from itself alone: {d}"
    );
    assert_ne!(together[0].images[0].image, together[1].images[0].image);
    // The same seed and latents under DDIM give another image: the sampler was used.
    let ddim = p
        .render(&request(21, 7.5, 1.0, 1, ""), &fa, &RenderOptions::traced())
        .unwrap();
    assert!(max_abs_diff(&trace(&alone_a).image, &trace(&ddim).image) > 1e-2);
}

#[test]
fn incompatible_or_oversized_batches_are_refused() {
    let p = tiny();
    let f = face(3);
    let cfg = request(1, 7.5, 1.0, 1, "");
    let no_cfg = request(1, 1.0, 1.0, 1, "");
    let err = p
        .render_batch(&[(&cfg, &f), (&no_cfg, &f)], &RenderOptions::traced())
        .unwrap_err()
        .to_string();
    assert!(err.contains("same size, steps and CFG"), "{err}");
    let mut odd = request(1, 7.5, 1.0, 1, "");
    odd.width = 100;
    let err = p
        .render(&odd, &f, &RenderOptions::traced())
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of 8"), "{err}");
    let bad_latents =
        RenderOptions::traced().with_initial_latents(vec![candle_core::Tensor::zeros(
            (1, 4, 8, 8),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap()]);
    let err = p.render(&cfg, &f, &bad_latents).unwrap_err().to_string();
    assert!(
        err.contains("initial latents must be [1, 4, 24, 16]"),
        "{err}"
    );
    let mut short_embedding = f.clone();
    short_embedding.id_embedding.truncate(100);
    let err = p
        .render(&cfg, &short_embedding, &RenderOptions::traced())
        .unwrap_err()
        .to_string();
    assert!(err.contains("512"), "{err}");
}

/// Best-of-N: a job with candidates renders all of them, each from its own seed (`seed + i`),
/// so each candidate is the image that seed gives alone (within the batching tolerance).
#[test]
fn candidates_each_start_from_their_own_seed() {
    let p = tiny();
    let f = face(3);
    let best_of = JobSettings {
        candidates: 3,
        ..request(40, 7.5, 1.0, 1, "")
    };
    assert_eq!(best_of.image_seeds(), Some(vec![40, 41, 42]));
    let all = p.render(&best_of, &f, &RenderOptions::traced()).unwrap();
    assert_eq!(all.images.len(), 3);
    let initial = &trace(&all).initial_latents;
    for (i, seed) in [40u64, 41, 42].into_iter().enumerate() {
        let alone = p
            .render(
                &request(seed, 7.5, 1.0, 1, ""),
                &f,
                &RenderOptions::traced(),
            )
            .unwrap();
        let start = initial.narrow(0, i, 1).unwrap();
        assert_eq!(
            max_abs_diff(&start, &trace(&alone).initial_latents),
            0.0,
            "candidate {i} starts from seed {seed}'s noise"
        );
        let image = trace(&all).image.narrow(0, i, 1).unwrap();
        let d = max_abs_diff(&image, &trace(&alone).image);
        assert!(
            d <= 2e-3,
            "candidate {i} differs from seed {seed} alone: {d}"
        );
    }
    // Without candidates, samples share one stream from the seed, as before.
    assert_eq!(request(40, 7.5, 1.0, 2, "").image_seeds(), None);
}

/// Several photos: the CLIP features are the mean over every crop, so the same crop twice is
/// the single photo exactly, and another crop changes the image.
#[test]
fn several_crops_average_their_clip_features() {
    let p = tiny();
    let job = request(21, 7.5, 1.0, 1, "");
    let single = face(4);
    let twice = PreparedFace {
        more_aligned_224: vec![single.aligned_224.clone()],
        ..single.clone()
    };
    let other_crop = headshot_core::RgbImage {
        width: 224,
        height: 224,
        pixels: (0..224 * 224 * 3).map(|i| (i % 199) as u8).collect(),
    };
    let mixed = PreparedFace {
        more_aligned_224: vec![other_crop.clone()],
        ..single.clone()
    };
    let features = |f: &PreparedFace| p.face_features(f).unwrap();
    assert_eq!(max_abs_diff(&features(&single), &features(&twice)), 0.0);
    let expected = ((p.face_image_features(&single.aligned_224).unwrap()
        + p.face_image_features(&other_crop).unwrap())
    .unwrap()
        / 2.0)
        .unwrap();
    assert!(max_abs_diff(&features(&mixed), &expected) < 1e-6);

    let a = p.render(&job, &single, &RenderOptions::default()).unwrap();
    let b = p.render(&job, &twice, &RenderOptions::default()).unwrap();
    let c = p.render(&job, &mixed, &RenderOptions::default()).unwrap();
    assert_eq!(a.images[0].image, b.images[0].image);
    assert_ne!(a.images[0].image, c.images[0].image);
}

#[test]
fn generator_info_names_the_device_and_the_model_set() {
    // What the server's system_details reports for this device.
    let info = headshot_core::Generator::info(tiny());
    assert_eq!(
        info,
        headshot_core::GeneratorInfo {
            device: "cpu".to_string(),
            kind: "cpu".to_string(),
            models: "tiny".to_string(),
        }
    );
}
