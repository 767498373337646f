//! Decoding user-supplied image bytes into 8-bit RGB, safely.
//!
//! The reference (insightface as used by the IP-Adapter demo) reads photos with
//! `cv2.imread(path)` in colour mode: EXIF orientation applied, grayscale replicated to three
//! channels, alpha dropped (not composited), CMYK converted with OpenCV's Adobe formula. We do
//! the same with the `image` crate, except JPEG pixels, which come from libjpeg-turbo's decoder
//! (MozJPEG, see `jpeg.rs`) so they are identical to OpenCV's. Dimensions and
//! memory are checked from the header before any pixel buffer is allocated, so a 30000x30000
//! "decompression bomb" costs nothing.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use headshot_core::RgbImage;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use crate::error::FaceError;
use crate::jpeg::decode_jpeg;

/// An image ready for analysis: 8-bit RGB, row-major, orientation already applied.
pub type DecodedImage = RgbImage;

/// Bounds on what [`decode_image`] accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width in pixels (as stored, before EXIF rotation).
    pub max_width: u32,
    /// Largest accepted height in pixels (as stored, before EXIF rotation).
    pub max_height: u32,
    /// Largest number of bytes the decoder and the RGB conversion may allocate together.
    pub max_alloc_bytes: u64,
}

impl Default for DecodeLimits {
    /// 12000 px per side (beyond any phone camera) and 512 MiB of pixel buffers.
    fn default() -> Self {
        Self {
            max_width: 12_000,
            max_height: 12_000,
            max_alloc_bytes: 512 * 1024 * 1024,
        }
    }
}

/// Decodes JPEG (incl. CMYK and EXIF orientation), PNG, WebP, GIF, BMP or TIFF bytes to RGB.
///
/// Errors: [`FaceError::UnreadableImage`] for empty, truncated, corrupt or unknown data,
/// [`FaceError::ImageTooLarge`] / [`FaceError::ImageNeedsTooMuchMemory`] when the header
/// exceeds `limits`. Never panics on any input.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, FaceError> {
    if bytes.is_empty() {
        return Err(unreadable("the data is empty (0 bytes)"));
    }
    // The decoders are not expected to panic, but user bytes must never take the worker down.
    match catch_unwind(AssertUnwindSafe(|| decode_checked(bytes, limits))) {
        Ok(result) => result,
        Err(_) => Err(unreadable(
            "the decoder rejected the data (internal decoder failure)",
        )),
    }
}

fn decode_checked(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, FaceError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| unreadable(format!("could not inspect the data: {e}")))?;
    if reader.format().is_none() {
        return Err(unreadable(
            "the data is not a supported image format (JPEG, PNG, WebP, GIF, BMP or TIFF expected)",
        ));
    }
    // Dimensions are checked by us right after the header (to report them); the allocation
    // cap also binds the decoders' internal buffers.
    let mut decoder_limits = Limits::default();
    decoder_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(decoder_limits);

    let format = reader.format();
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, limits))?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    // The decoder's own buffer plus the RGB copy we make from it.
    let needed_bytes = decoder
        .total_bytes()
        .saturating_add(u64::from(width) * u64::from(height) * 3);
    if needed_bytes > limits.max_alloc_bytes {
        return Err(FaceError::ImageNeedsTooMuchMemory {
            needed_bytes,
            limit_bytes: limits.max_alloc_bytes,
        });
    }
    if width == 0 || height == 0 {
        return Err(unreadable(format!(
            "the image has no pixels ({width}x{height})"
        )));
    }
    // A malformed EXIF block should not make an otherwise good photo unreadable.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = if format == Some(ImageFormat::Jpeg) {
        // Same pixels as cv2.imread (libjpeg-turbo); see jpeg.rs.
        drop(decoder);
        let jpeg = decode_jpeg(bytes).map_err(unreadable)?;
        let buffer = image::RgbImage::from_raw(jpeg.width, jpeg.height, jpeg.rgb)
            .ok_or_else(|| unreadable("the JPEG decoder returned a short pixel buffer"))?;
        DynamicImage::ImageRgb8(buffer)
    } else {
        DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, limits))?
    };
    image.apply_orientation(orientation);
    tracing::debug!(width, height, ?orientation, "decoded image");
    let rgb = image.into_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(RgbImage {
        width,
        height,
        pixels: rgb.into_raw(),
    })
}

fn check_dimensions(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), FaceError> {
    if width > limits.max_width || height > limits.max_height {
        return Err(FaceError::ImageTooLarge {
            width,
            height,
            max_width: limits.max_width,
            max_height: limits.max_height,
        });
    }
    Ok(())
}

fn map_image_error(err: ImageError, limits: &DecodeLimits) -> FaceError {
    match err {
        ImageError::Limits(e) => match e.kind() {
            image::error::LimitErrorKind::DimensionError => unreadable(format!(
                "the image is larger than the limit of {}x{} pixels; send a smaller photo",
                limits.max_width, limits.max_height
            )),
            image::error::LimitErrorKind::InsufficientMemory => unreadable(format!(
                "decoding the image needs more than the limit of {} bytes; send a smaller photo",
                limits.max_alloc_bytes
            )),
            _ => unreadable(format!("the image exceeds a decoding limit: {e}")),
        },
        ImageError::Unsupported(e) => unreadable(format!("unsupported image: {e}")),
        ImageError::Decoding(e) => {
            unreadable(format!("the image data is corrupt or truncated: {e}"))
        }
        ImageError::IoError(e) => {
            unreadable(format!("the image data ended early or is corrupt: {e}"))
        }
        other => unreadable(other.to_string()),
    }
}

fn unreadable(reason: impl Into<String>) -> FaceError {
    FaceError::UnreadableImage {
        reason: reason.into(),
    }
}
