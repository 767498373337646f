//! Every common input format decodes to RGB the way `cv2.imread(..., IMREAD_COLOR)` sees it:
//! grayscale replicated, alpha dropped (not composited), orientation applied.

use headshot_face::{decode_image, DecodeLimits};
use image::{DynamicImage, ImageFormat};

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

fn gradient_rgba(width: u32, height: u32) -> image::RgbaImage {
    image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) % 256) as u8,
            (x * 3 % 256) as u8,
        ])
    })
}

#[test]
fn lossless_formats_round_trip_and_drop_alpha() {
    let rgba = gradient_rgba(37, 23);
    let rgb = DynamicImage::ImageRgba8(rgba.clone()).to_rgb8();
    for format in [
        ImageFormat::Png,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::WebP,
    ] {
        let bytes = encode(&DynamicImage::ImageRgba8(rgba.clone()), format);
        let decoded = decode_image(&bytes, &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!((decoded.width, decoded.height), (37, 23), "{format:?}");
        assert_eq!(
            decoded.pixels,
            rgb.as_raw().as_slice(),
            "{format:?}: alpha must be dropped"
        );
    }
}

#[test]
fn grayscale_is_replicated_to_three_channels() {
    let gray = image::GrayImage::from_fn(16, 9, |x, y| image::Luma([(x * 13 + y * 7) as u8]));
    for format in [ImageFormat::Png, ImageFormat::Jpeg] {
        let bytes = encode(&DynamicImage::ImageLuma8(gray.clone()), format);
        let decoded = decode_image(&bytes, &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert!(
            decoded
                .pixels
                .chunks_exact(3)
                .all(|p| p[0] == p[1] && p[1] == p[2]),
            "{format:?}"
        );
        if format == ImageFormat::Png {
            let expected: Vec<u8> = gray.as_raw().iter().flat_map(|&v| [v, v, v]).collect();
            assert_eq!(decoded.pixels, expected);
        }
    }
}

#[test]
fn sixteen_bit_png_is_reduced_to_eight_bits() {
    let wide = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(8, 4, |x, _| {
        image::Rgb([x as u16 * 8000, 65535, 0])
    });
    let bytes = encode(&DynamicImage::ImageRgb16(wide), ImageFormat::Png);
    let decoded = decode_image(&bytes, &DecodeLimits::default()).expect("16-bit PNG decodes");
    assert_eq!(decoded.pixels.len(), 8 * 4 * 3);
    assert_eq!(&decoded.pixels[0..3], &[0, 255, 0]);
}

#[test]
fn gif_decodes_its_first_frame() {
    let rgba = image::RgbaImage::from_pixel(10, 6, image::Rgba([200, 100, 50, 255]));
    let bytes = encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Gif);
    let decoded = decode_image(&bytes, &DecodeLimits::default()).expect("GIF decodes");
    assert_eq!((decoded.width, decoded.height), (10, 6));
    assert!(decoded.pixels.chunks_exact(3).all(|p| p == [200, 100, 50]));
}

#[test]
fn jpeg_matches_its_source_closely() {
    let rgb = DynamicImage::ImageRgba8(gradient_rgba(64, 48)).to_rgb8();
    let bytes = encode(&DynamicImage::ImageRgb8(rgb.clone()), ImageFormat::Jpeg);
    let decoded = decode_image(&bytes, &DecodeLimits::default()).expect("JPEG decodes");
    let mean_error = decoded
        .pixels
        .iter()
        .zip(rgb.as_raw())
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / decoded.pixels.len() as f64;
    assert!(mean_error < 12.0, "mean abs error {mean_error}");
}
