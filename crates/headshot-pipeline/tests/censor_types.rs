//! Each censor type on a face picture, and the pass-through of unflagged images.
//! Set HEADSHOT_CENSOR_DUMP_DIR to write the censored pictures there as PNGs for a look.

use std::path::PathBuf;

use headshot_core::{CensorType, RgbImage};
use headshot_models::safety_checker::SafetyVerdict;
use headshot_pipeline::censor::{apply_safety, censor, CensorError};

fn face_picture() -> RgbImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/goldens/face_512x768.png");
    let decoded = image::open(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .to_rgb8();
    let (width, height) = decoded.dimensions();
    RgbImage {
        width,
        height,
        pixels: decoded.into_raw(),
    }
}

fn dump(name: &str, image: &RgbImage) {
    if let Some(dir) = std::env::var_os("HEADSHOT_CENSOR_DUMP_DIR") {
        let buffer =
            image::RgbImage::from_raw(image.width, image.height, image.pixels.clone()).unwrap();
        buffer
            .save(PathBuf::from(dir).join(format!("{name}.png")))
            .unwrap();
    }
}

/// Mean absolute difference per channel value.
fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    let total: u64 = a
        .pixels
        .iter()
        .zip(&b.pixels)
        .map(|(&x, &y)| (x as i64 - y as i64).unsigned_abs())
        .sum();
    total as f64 / a.pixels.len() as f64
}

/// Mean absolute difference between horizontal and vertical neighbours: fine detail.
fn detail(image: &RgbImage) -> f64 {
    let (w, h) = (image.width as usize, image.height as usize);
    let at = |x: usize, y: usize, c: usize| image.pixels[(y * w + x) * 3 + c] as i64;
    let mut total = 0u64;
    let mut count = 0u64;
    for y in 0..h - 1 {
        for x in 0..w - 1 {
            for c in 0..3 {
                total += (at(x + 1, y, c) - at(x, y, c)).unsigned_abs()
                    + (at(x, y + 1, c) - at(x, y, c)).unsigned_abs();
                count += 2;
            }
        }
    }
    total as f64 / count as f64
}

fn distinct_colours(image: &RgbImage) -> usize {
    let mut colours: Vec<&[u8]> = image.pixels.chunks_exact(3).collect();
    colours.sort_unstable();
    colours.dedup();
    colours.len()
}

/// Detail inside a centred window `fraction` of each side (the face of a portrait).
fn centre_crop(image: &RgbImage, fraction: f64) -> RgbImage {
    let (w, h) = (image.width as usize, image.height as usize);
    let (cw, ch) = (
        (w as f64 * fraction) as usize,
        (h as f64 * fraction) as usize,
    );
    let (x0, y0) = ((w - cw) / 2, (h - ch) / 2);
    let mut pixels = Vec::with_capacity(cw * ch * 3);
    for y in y0..y0 + ch {
        pixels.extend_from_slice(&image.pixels[(y * w + x0) * 3..(y * w + x0 + cw) * 3]);
    }
    RgbImage {
        width: cw as u32,
        height: ch as u32,
        pixels,
    }
}

fn verdict(nsfw: bool) -> SafetyVerdict {
    SafetyVerdict {
        nsfw,
        special_care: false,
        concept_scores: vec![if nsfw { 0.02 } else { -0.02 }],
        special_scores: vec![-0.1],
        concept_cos: vec![0.3],
        special_cos: vec![0.1],
    }
}

#[test]
fn black_is_all_zeros_of_the_same_size() {
    let face = face_picture();
    let out = censor(&face, CensorType::Black);
    dump("black", &out);
    assert_eq!((out.width, out.height), (face.width, face.height));
    assert_eq!(out.pixels.len(), face.pixels.len());
    assert!(out.pixels.iter().all(|&v| v == 0));
}

#[test]
fn blur_keeps_the_size_and_wipes_out_the_face_detail() {
    let face = face_picture();
    let out = censor(&face, CensorType::Blur);
    dump("blur", &out);
    assert_eq!(
        (out.width, out.height, out.pixels.len()),
        (face.width, face.height, face.pixels.len())
    );
    let (before, after) = (
        detail(&centre_crop(&face, 0.5)),
        detail(&centre_crop(&out, 0.5)),
    );
    assert!(
        after < 0.1 * before,
        "face detail {before:.3} -> {after:.3}"
    );
    let diff = mean_abs_diff(&centre_crop(&face, 0.5), &centre_crop(&out, 0.5));
    assert!(
        diff > 10.0,
        "face region changed by only {diff:.2} per channel"
    );
}

#[test]
fn pixelate_keeps_the_size_and_uses_large_uniform_blocks() {
    let face = face_picture();
    let out = censor(&face, CensorType::Pixelate);
    dump("pixelate", &out);
    assert_eq!(
        (out.width, out.height, out.pixels.len()),
        (face.width, face.height, face.pixels.len())
    );
    // At least 1/16 of the short side per block: at most 16 x 24 blocks on 512x768.
    let block = (face.width.min(face.height) / 16) as usize;
    assert!(
        distinct_colours(&out)
            <= (face.width as usize).div_ceil(block) * (face.height as usize).div_ceil(block)
    );
    let w = face.width as usize;
    for (i, px) in out.pixels.chunks_exact(3).enumerate() {
        let (x, y) = (i % w, i / w);
        let corner = ((y / block * block) * w + x / block * block) * 3;
        assert_eq!(
            px,
            &out.pixels[corner..corner + 3],
            "pixel ({x},{y}) differs from its block"
        );
    }
    // Block means flatten the facial features (flat skin changes little, eyes and mouth a lot).
    let changed = out
        .pixels
        .chunks_exact(3)
        .zip(face.pixels.chunks_exact(3))
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed * 10 > face.pixels.len() / 3 * 9,
        "only {changed} pixels changed"
    );
    let diff = mean_abs_diff(&centre_crop(&face, 0.5), &centre_crop(&out, 0.5));
    assert!(
        diff > 5.0,
        "face region changed by only {diff:.2} per channel"
    );
}

#[test]
fn sensitive_content_text_is_a_card_with_centred_text() {
    let face = face_picture();
    let out = censor(&face, CensorType::SensitiveContentText);
    dump("sensitive_content_text", &out);
    assert_eq!(
        (out.width, out.height, out.pixels.len()),
        (face.width, face.height, face.pixels.len())
    );
    assert_ne!(out, face);
    assert!(distinct_colours(&out) > 2, "the card is uniform");
    assert!(mean_abs_diff(&face, &out) > 10.0);
    // The picture is gone: nothing of the input is left around the notice.
    assert!(
        distinct_colours(&centre_crop(&out, 1.0)) < 300,
        "too many colours for a text card"
    );
    // Text pixels (brighter than the background) sit around the centre.
    let (w, h) = (out.width as usize, out.height as usize);
    let lit: Vec<(usize, usize)> = out
        .pixels
        .chunks_exact(3)
        .enumerate()
        .filter(|(_, p)| p[0] > 200)
        .map(|(i, _)| (i % w, i / w))
        .collect();
    assert!(lit.len() > w * h / 200, "only {} text pixels", lit.len());
    let (min_x, max_x) = (
        lit.iter().map(|p| p.0).min().unwrap(),
        lit.iter().map(|p| p.0).max().unwrap(),
    );
    let (min_y, max_y) = (
        lit.iter().map(|p| p.1).min().unwrap(),
        lit.iter().map(|p| p.1).max().unwrap(),
    );
    let (cx, cy) = ((min_x + max_x) as f64 / 2.0, (min_y + max_y) as f64 / 2.0);
    assert!(
        (cx - w as f64 / 2.0).abs() < w as f64 * 0.05,
        "text centre x {cx}"
    );
    assert!(
        (cy - h as f64 / 2.0).abs() < h as f64 * 0.05,
        "text centre y {cy}"
    );
    assert!(
        max_x - min_x > w / 2,
        "text spans only {} of {w} px",
        max_x - min_x
    );
}

#[test]
fn every_censor_keeps_odd_and_tiny_sizes() {
    let face = face_picture();
    for (w, h) in [(1, 1), (3, 7), (17, 5), (640, 360)] {
        let small = RgbImage {
            width: w,
            height: h,
            pixels: face.pixels[..(w * h * 3) as usize].to_vec(),
        };
        for kind in CensorType::ALL {
            let out = censor(&small, kind);
            assert_eq!(
                (out.width, out.height, out.pixels.len()),
                (w, h, small.pixels.len()),
                "{kind} at {w}x{h}"
            );
        }
    }
}

#[test]
fn apply_safety_censors_flagged_images_and_passes_the_others_unchanged() {
    let face = face_picture();
    let other = RgbImage {
        pixels: face.pixels.iter().map(|v| 255 - v).collect(),
        ..face.clone()
    };
    for kind in CensorType::ALL {
        let out = apply_safety(
            vec![face.clone(), other.clone()],
            &[verdict(false), verdict(true)],
            kind,
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert!(
            !out[0].nsfw && out[0].image == face,
            "{kind}: unflagged image changed"
        );
        assert!(out[1].nsfw, "{kind}: flag lost");
        assert_eq!(out[1].image, censor(&other, kind), "{kind}");
        assert_ne!(out[1].image, other, "{kind}: flagged image left as it was");
    }
}

#[test]
fn apply_safety_rejects_a_verdict_count_mismatch() {
    let face = face_picture();
    let err = apply_safety(
        vec![face.clone(), face],
        &[verdict(true)],
        CensorType::Black,
    )
    .unwrap_err();
    assert_eq!(
        err,
        CensorError::VerdictCount {
            images: 2,
            verdicts: 1
        }
    );
}
