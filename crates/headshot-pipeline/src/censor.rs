//! Censoring of images the safety checker flagged, per the request's `safety_checker_type`.
//!
//! Every censor keeps the image size. `black` is what diffusers returns; the others are the hosted
//! service's options: `blur` and `pixelate` are scaled to the image so a face cannot be
//! recognised at any output size, `sensitive_content_text` replaces the picture by a neutral grey
//! card with a notice drawn in the bundled DejaVu Sans Bold.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use headshot_core::{CensorType, GeneratedImage, RgbImage};
use headshot_models::safety_checker::SafetyVerdict;

/// DejaVu Sans Bold (Bitstream Vera licence, see `assets/fonts/LICENSE-DejaVu.txt`).
static FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-Bold.ttf");

/// The text drawn by `sensitive_content_text`.
pub const SENSITIVE_CONTENT_NOTICE: &str = "Sensitive content";

/// Gaussian sigma as a fraction of the short side: 1/16 (32 px at 512) leaves only colour blobs.
const BLUR_SIGMA_FRACTION: f32 = 1.0 / 16.0;
/// Pixelation block as a fraction of the short side: 1/16 gives a 16-block-wide face at most.
const PIXEL_BLOCK_FRACTION: u32 = 16;
const CARD_BACKGROUND: [u8; 3] = [128, 128, 128];
const CARD_TEXT: [u8; 3] = [245, 245, 245];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CensorError {
    #[error("the safety checker returned {verdicts} verdicts for {images} images; expected one per image")]
    VerdictCount { images: usize, verdicts: usize },
}

/// Replaces a flagged image. The output always has the input's size.
pub fn censor(image: &RgbImage, kind: CensorType) -> RgbImage {
    let (width, height) = (image.width, image.height);
    let len = width as usize * height as usize * 3;
    if len == 0 || image.pixels.len() != len {
        // Nothing to look at (or a malformed buffer): a black image of the stated size is safe.
        return RgbImage {
            width,
            height,
            pixels: vec![0; len],
        };
    }
    match kind {
        CensorType::Black => RgbImage {
            width,
            height,
            pixels: vec![0; len],
        },
        CensorType::Blur => blur(image),
        CensorType::Pixelate => pixelate(image),
        CensorType::SensitiveContentText => sensitive_content_card(width, height),
    }
}

/// Wraps the decoded images with the checker's flags, censoring the flagged ones with `kind`.
/// Unflagged images pass through unchanged.
pub fn apply_safety(
    images: Vec<RgbImage>,
    verdicts: &[SafetyVerdict],
    kind: CensorType,
) -> Result<Vec<GeneratedImage>, CensorError> {
    if images.len() != verdicts.len() {
        return Err(CensorError::VerdictCount {
            images: images.len(),
            verdicts: verdicts.len(),
        });
    }
    Ok(images
        .into_iter()
        .zip(verdicts)
        .map(|(image, verdict)| {
            if verdict.nsfw {
                tracing::info!(censor = %kind, "safety checker flagged an image; censoring it");
                GeneratedImage {
                    image: censor(&image, kind),
                    nsfw: true,
                }
            } else {
                GeneratedImage { image, nsfw: false }
            }
        })
        .collect())
}

fn short_side(image: &RgbImage) -> u32 {
    image.width.min(image.height)
}

fn blur(image: &RgbImage) -> RgbImage {
    let sigma = (short_side(image) as f32 * BLUR_SIGMA_FRACTION).max(2.0);
    let buffer = image::RgbImage::from_raw(image.width, image.height, image.pixels.clone())
        .expect("length checked by censor()");
    let blurred = image::imageops::blur(&buffer, sigma);
    RgbImage {
        width: image.width,
        height: image.height,
        pixels: blurred.into_raw(),
    }
}

/// Each block becomes the mean colour of its pixels (blocks at the right/bottom edge may be smaller).
fn pixelate(image: &RgbImage) -> RgbImage {
    let block = (short_side(image) / PIXEL_BLOCK_FRACTION).max(1) as usize;
    let (w, h) = (image.width as usize, image.height as usize);
    let mut pixels = vec![0u8; w * h * 3];
    for by in (0..h).step_by(block) {
        for bx in (0..w).step_by(block) {
            let (y_end, x_end) = ((by + block).min(h), (bx + block).min(w));
            let mut sum = [0u64; 3];
            for y in by..y_end {
                for x in bx..x_end {
                    let p = &image.pixels[(y * w + x) * 3..][..3];
                    for c in 0..3 {
                        sum[c] += p[c] as u64;
                    }
                }
            }
            let count = ((y_end - by) * (x_end - bx)) as u64;
            let mean = sum.map(|s| ((s + count / 2) / count) as u8);
            for y in by..y_end {
                for x in bx..x_end {
                    pixels[(y * w + x) * 3..][..3].copy_from_slice(&mean);
                }
            }
        }
    }
    RgbImage {
        width: image.width,
        height: image.height,
        pixels,
    }
}

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(FONT_BYTES)
            .expect("the bundled DejaVu font is a valid TrueType file")
    })
}

/// Width of `text` at `scale`, with kerning, in pixels.
fn text_width(font: &FontRef<'static>, scale: PxScale, text: &str) -> f32 {
    let scaled = font.as_scaled(scale);
    let mut width = 0.0;
    let mut previous = None;
    for ch in text.chars() {
        let id = scaled.glyph_id(ch);
        if let Some(prev) = previous {
            width += scaled.kern(prev, id);
        }
        width += scaled.h_advance(id);
        previous = Some(id);
    }
    width
}

/// A grey card with the notice centred, sized to about 80% of the width (and at most a quarter
/// of the height), anti-aliased.
fn sensitive_content_card(width: u32, height: u32) -> RgbImage {
    let (w, h) = (width as usize, height as usize);
    let mut pixels = CARD_BACKGROUND.repeat(w * h);
    let font = font();
    let unit = text_width(font, PxScale::from(1.0), SENSITIVE_CONTENT_NOTICE);
    let size = (0.8 * width as f32 / unit).min(0.25 * height as f32);
    if size < 1.0 {
        return RgbImage {
            width,
            height,
            pixels,
        };
    }
    let scale = PxScale::from(size);
    let scaled = font.as_scaled(scale);
    let line_width = text_width(font, scale, SENSITIVE_CONTENT_NOTICE);
    // Centre the line box (ascent above, descent below the baseline) vertically.
    let line_height = scaled.ascent() - scaled.descent();
    let baseline = (height as f32 - line_height) / 2.0 + scaled.ascent();
    let mut x = (width as f32 - line_width) / 2.0;
    let mut previous = None;
    for ch in SENSITIVE_CONTENT_NOTICE.chars() {
        let id = scaled.glyph_id(ch);
        if let Some(prev) = previous {
            x += scaled.kern(prev, id);
        }
        let glyph = id.with_scale_and_position(scale, ab_glyph::point(x, baseline));
        x += scaled.h_advance(id);
        previous = Some(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + gx as i64;
            let py = bounds.min.y as i64 + gy as i64;
            if px < 0 || py < 0 || px >= w as i64 || py >= h as i64 {
                return;
            }
            let coverage = coverage.clamp(0.0, 1.0);
            let at = (py as usize * w + px as usize) * 3;
            for c in 0..3 {
                let blended =
                    CARD_BACKGROUND[c] as f32 * (1.0 - coverage) + CARD_TEXT[c] as f32 * coverage;
                pixels[at + c] = blended.round() as u8;
            }
        });
    }
    RgbImage {
        width,
        height,
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_or_empty_images_become_black_of_the_stated_size() {
        let empty = RgbImage {
            width: 0,
            height: 0,
            pixels: vec![],
        };
        for kind in CensorType::ALL {
            assert_eq!(censor(&empty, kind), empty);
        }
        let short = RgbImage {
            width: 2,
            height: 2,
            pixels: vec![9; 5],
        };
        assert_eq!(censor(&short, CensorType::Blur).pixels, vec![0; 12]);
    }

    #[test]
    fn notice_fits_inside_the_image() {
        let unit = text_width(font(), PxScale::from(1.0), SENSITIVE_CONTENT_NOTICE);
        assert!(
            unit > 5.0 && unit < 15.0,
            "'{SENSITIVE_CONTENT_NOTICE}' is {unit} em wide"
        );
    }
}
