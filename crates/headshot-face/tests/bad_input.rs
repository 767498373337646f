//! Hostile and broken inputs: every one is an error with a useful message, never a panic.

mod common;

use headshot_face::{decode_image, DecodeLimits, FaceError};
use image::ImageEncoder;

fn yaoming_jpeg() -> Vec<u8> {
    std::fs::read(common::assets_dir().join("yaoming.jpg")).expect("yaoming.jpg")
}

fn png_bytes(width: u32, height: u32) -> Vec<u8> {
    let pixels: Vec<u8> = (0..width * height * 3).map(|v| (v % 251) as u8).collect();
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&pixels, width, height, image::ExtendedColorType::Rgb8)
        .expect("encode png");
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32(&body).to_be_bytes());
    chunk
}

/// A valid PNG header announcing `width` x `height` RGB pixels, followed by a tiny IDAT.
fn png_bomb_header(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, no filter, no interlace
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// The real yaoming.jpg with its SOF0 frame header patched to claim `width` x `height`.
fn jpeg_bomb_header(width: u16, height: u16) -> Vec<u8> {
    let mut jpeg = yaoming_jpeg();
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("baseline SOF0 marker");
    // FFC0, length (2), precision (1), height (2), width (2)
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

/// A BMP file header + BITMAPINFOHEADER for a 24-bit image of the given size, no pixel data.
fn bmp_bomb_header(width: i32, height: i32) -> Vec<u8> {
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&(54u32 + 16).to_le_bytes());
    bmp.extend_from_slice(&[0, 0, 0, 0]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&width.to_le_bytes());
    bmp.extend_from_slice(&height.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    bmp.extend_from_slice(&[0; 16]);
    bmp
}

fn expect_unreadable(result: Result<headshot_face::DecodedImage, FaceError>, what: &str) -> String {
    match result {
        Err(err @ FaceError::UnreadableImage { .. }) => err.to_string(),
        other => panic!("{what}: expected UnreadableImage, got {other:?}"),
    }
}

fn expect_too_large(result: Result<headshot_face::DecodedImage, FaceError>, what: &str) {
    match result {
        Err(FaceError::ImageTooLarge {
            width,
            height,
            max_width,
            ..
        }) => {
            assert_eq!((width, height), (30_000, 30_000), "{what}");
            assert_eq!(max_width, DecodeLimits::default().max_width);
        }
        other => panic!("{what}: expected ImageTooLarge, got {other:?}"),
    }
}

#[test]
fn empty_input_is_unreadable() {
    let message = expect_unreadable(decode_image(&[], &DecodeLimits::default()), "empty");
    assert!(message.contains("empty"), "{message}");
}

#[test]
fn non_images_are_unreadable() {
    for (what, bytes) in [
        ("text", b"hello, this is not an image".to_vec()),
        ("json", br#"{"key": "value"}"#.to_vec()),
        ("zeros", vec![0u8; 4096]),
        ("one byte", vec![0xff]),
        ("jpeg magic only", vec![0xff, 0xd8, 0xff]),
        ("png magic only", b"\x89PNG\r\n\x1a\n".to_vec()),
    ] {
        let message = expect_unreadable(decode_image(&bytes, &DecodeLimits::default()), what);
        assert!(
            message.starts_with("the image could not be read"),
            "{what}: {message}"
        );
    }
}

#[test]
fn truncated_jpeg_and_png_are_unreadable() {
    let jpeg = yaoming_jpeg();
    for cut in [jpeg.len() / 3, jpeg.len() / 2, jpeg.len() - 100] {
        let message = expect_unreadable(
            decode_image(&jpeg[..cut], &DecodeLimits::default()),
            "truncated jpeg",
        );
        assert!(
            message.contains("truncated") || message.contains("corrupt"),
            "{message}"
        );
    }
    let png = png_bytes(64, 48);
    for cut in [20, png.len() / 2, png.len() - 13] {
        expect_unreadable(
            decode_image(&png[..cut], &DecodeLimits::default()),
            "truncated png",
        );
    }
}

#[test]
fn header_bombs_are_rejected_before_allocating() {
    let limits = DecodeLimits::default();
    expect_too_large(
        decode_image(&png_bomb_header(30_000, 30_000), &limits),
        "png bomb",
    );
    expect_too_large(
        decode_image(&jpeg_bomb_header(30_000, 30_000), &limits),
        "jpeg bomb",
    );
    expect_too_large(
        decode_image(&bmp_bomb_header(30_000, 30_000), &limits),
        "bmp bomb",
    );
}

#[test]
fn allocation_limit_is_enforced() {
    // 10000x10000 passes the dimension limit but needs ~600 MB: over the default 512 MiB.
    match decode_image(&png_bomb_header(10_000, 10_000), &DecodeLimits::default()) {
        Err(FaceError::ImageNeedsTooMuchMemory {
            needed_bytes,
            limit_bytes,
        }) => {
            assert!(needed_bytes > limit_bytes);
        }
        other => panic!("expected ImageNeedsTooMuchMemory, got {other:?}"),
    }
}

#[test]
fn custom_dimension_limits_apply() {
    let limits = DecodeLimits {
        max_width: 100,
        max_height: 100,
        ..DecodeLimits::default()
    };
    match decode_image(&yaoming_jpeg(), &limits) {
        Err(
            err @ FaceError::ImageTooLarge {
                width: 233,
                height: 287,
                ..
            },
        ) => {
            assert!(err.to_string().contains("100x100"), "{err}");
        }
        other => panic!("expected ImageTooLarge, got {other:?}"),
    }
}

#[test]
fn analyzer_turns_bad_bytes_into_errors() {
    let analyzer = common::analyzer();
    let jpeg = yaoming_jpeg();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("text", b"GIF89a but not really".to_vec()),
        ("truncated", jpeg[..jpeg.len() / 2].to_vec()),
        ("png bomb", png_bomb_header(30_000, 30_000)),
        ("jpeg bomb", jpeg_bomb_header(30_000, 30_000)),
        ("flat png without a face", png_bytes(64, 64)),
    ];
    for (what, bytes) in cases {
        match analyzer.analyze_largest(&bytes) {
            Err(
                FaceError::UnreadableImage { .. }
                | FaceError::ImageTooLarge { .. }
                | FaceError::NoFace,
            ) => {}
            other => panic!("{what}: expected an input error, got {other:?}"),
        }
    }
}

#[test]
fn tiny_and_extreme_aspect_images_do_not_panic() {
    let analyzer = common::analyzer();
    for (w, h) in [(1, 1), (1, 700), (3000, 1), (2, 2)] {
        let bytes = png_bytes(w, h);
        match analyzer.analyze_largest(&bytes) {
            Err(FaceError::NoFace) => {}
            other => panic!("{w}x{h}: expected NoFace, got {other:?}"),
        }
    }
}

#[test]
fn every_prefix_and_bit_flip_of_a_photo_is_handled() {
    // Cheap fuzzing: many truncation points and corrupted bytes; each is Ok or Err, never a panic.
    let jpeg = yaoming_jpeg();
    let png = png_bytes(40, 30);
    for source in [&jpeg, &png] {
        for cut in (0..source.len()).step_by((source.len() / 64).max(1)) {
            let _ = decode_image(&source[..cut], &DecodeLimits::default());
        }
        let mut state = 0x2545_f491u32;
        for _ in 0..64 {
            let mut corrupted = source.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let index = state as usize % corrupted.len();
                corrupted[index] ^= (state >> 24) as u8 | 1;
            }
            if let Ok(image) = decode_image(&corrupted, &DecodeLimits::default()) {
                assert_eq!(
                    image.pixels.len(),
                    image.width as usize * image.height as usize * 3
                );
            }
        }
    }
}
