//! Pillow's 8-bit convolution resampling (`Image.resize` with BOX, BILINEAR, HAMMING, BICUBIC or
//! LANCZOS) re-implemented so that our CLIP inputs are bit-identical to what transformers feeds
//! the reference models.
//!
//! What makes Pillow's output what it is, and is reproduced here on purpose:
//! - separable: a horizontal then a vertical pass (vertical first when only the height shrinks,
//!   as Pillow 13 does), each skipped when that axis keeps its size; the intermediate image is
//!   stored as uint8 (rounded and clipped) between passes;
//! - when downscaling, the filter support is stretched by the scale factor (antialiasing);
//! - taps are computed in double precision, normalised to sum 1, then turned into signed
//!   fixed-point integers with 22 fractional bits (rounded half away from zero);
//! - each output sample is `(1 << 21) + sum(pixel * tap)` shifted right by 22 and clipped to 0..=255.

use headshot_core::RgbImage;

/// Fractional bits of Pillow's fixed-point filter taps (32 - 8 bits of result - 2 overflow bits).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The convolution filters of Pillow's `Image.resize`, with Pillow's numeric codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PilFilter {
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl PilFilter {
    /// Maps Pillow's `Image.Resampling` code (the `resample` field of preprocessor configs).
    /// NEAREST (0) is not a convolution in Pillow and is not supported here.
    pub fn from_pil_code(code: i64) -> Option<PilFilter> {
        match code {
            1 => Some(PilFilter::Lanczos),
            2 => Some(PilFilter::Bilinear),
            3 => Some(PilFilter::Bicubic),
            4 => Some(PilFilter::Box),
            5 => Some(PilFilter::Hamming),
            _ => None,
        }
    }

    /// Half-width of the filter at scale 1.
    fn support(self) -> f64 {
        match self {
            PilFilter::Box => 0.5,
            PilFilter::Bilinear | PilFilter::Hamming => 1.0,
            PilFilter::Bicubic => 2.0,
            PilFilter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            PilFilter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            PilFilter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            PilFilter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow writes these constants as C floats; keep their f32 rounding.
                    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
                }
            }
            PilFilter::Bicubic => {
                // Keys' cubic convolution with a = -0.5.
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            PilFilter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Fixed-point taps of one axis: output sample `i` reads `count[i]` input samples starting at
/// `first[i]`, weighted by `taps[i * ksize ..][..count[i]]`.
struct AxisTaps {
    ksize: usize,
    first: Vec<usize>,
    count: Vec<usize>,
    taps: Vec<i32>,
}

impl AxisTaps {
    /// Taps for resampling `in_size` samples (the whole axis, Pillow's default box) to `out_size`.
    fn new(in_size: usize, out_size: usize, filter: PilFilter) -> AxisTaps {
        // Pillow's box edges are C floats; the default box is (0, in_size).
        let (in0, in1) = (0.0f32, in_size as f32);
        let scale = (in1 - in0) as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;

        let mut first = Vec::with_capacity(out_size);
        let mut count = Vec::with_capacity(out_size);
        let mut taps = vec![0i32; out_size * ksize];
        let mut weights = vec![0f64; ksize];
        for out_index in 0..out_size {
            let center = in0 as f64 + (out_index as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; Rust's `as` does the same.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (xmax - xmin).clamp(0, ksize as i64) as usize;
            let mut sum = 0.0f64;
            for (x, w) in weights.iter_mut().take(n).enumerate() {
                *w = filter.weight(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
                sum += *w;
            }
            let row = &mut taps[out_index * ksize..][..ksize];
            for (tap, &w) in row.iter_mut().zip(weights.iter().take(n)) {
                let w = if sum != 0.0 { w / sum } else { w };
                *tap = to_fixed_point(w);
            }
            first.push(xmin as usize);
            count.push(n);
        }
        AxisTaps {
            ksize,
            first,
            count,
            taps,
        }
    }

    fn row(&self, out_index: usize) -> (usize, &[i32]) {
        let taps = &self.taps[out_index * self.ksize..][..self.count[out_index]];
        (self.first[out_index], taps)
    }
}

/// Rounds half away from zero into 22 fractional bits, as Pillow's `normalize_coeffs_8bpc`.
fn to_fixed_point(w: f64) -> i32 {
    let scaled = w * (1u32 << PRECISION_BITS) as f64;
    if w < 0.0 {
        (scaled - 0.5) as i32
    } else {
        (scaled + 0.5) as i32
    }
}

/// `(ss >> 22)` clipped to a byte. The accumulator starts at `1 << 21`, so this rounds.
fn clip8(accumulator: i64) -> u8 {
    (accumulator >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUNDING: i64 = 1 << (PRECISION_BITS - 1);

/// Resizes an RGB image to `width` x `height` exactly as Pillow's `Image.resize(size, filter)`
/// does for mode "RGB". Same size in and out returns a copy, as Pillow does.
///
/// Pass order follows Pillow 13 (the reference environment): horizontal first, except when the
/// height shrinks while the width does not, where the vertical pass runs first. Older Pillow
/// always went horizontal first; the two orders differ by rounding only in that case.
pub fn pil_resize(image: &RgbImage, width: u32, height: u32, filter: PilFilter) -> RgbImage {
    let (in_w, in_h) = (image.width as usize, image.height as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if out_w == 0 || out_h == 0 || in_w == 0 || in_h == 0 {
        return RgbImage {
            width,
            height,
            pixels: vec![0; out_w * out_h * 3],
        };
    }
    let need_horizontal = out_w != in_w;
    let need_vertical = out_h != in_h;
    let horizontal_first = !(out_w >= in_w && out_h < in_h);

    let pixels = if horizontal_first {
        let vertical = AxisTaps::new(in_h, out_h, filter);
        if need_horizontal {
            // Only the rows the vertical pass will read (Pillow does the same; it only saves work).
            let last = out_h - 1;
            let (first_row, end_row) = (
                vertical.first[0],
                vertical.first[last] + vertical.count[last],
            );
            let horizontal = AxisTaps::new(in_w, out_w, filter);
            let rows = horizontal_pass(&image.pixels, in_w, first_row..end_row, &horizontal);
            if need_vertical {
                vertical_pass(&rows, out_w, first_row, &vertical)
            } else {
                rows
            }
        } else if need_vertical {
            vertical_pass(&image.pixels, in_w, 0, &vertical)
        } else {
            image.pixels.clone()
        }
    } else {
        // Here the height shrinks, so a vertical pass is always needed.
        let vertical = AxisTaps::new(in_h, out_h, filter);
        let columns = vertical_pass(&image.pixels, in_w, 0, &vertical);
        if need_horizontal {
            horizontal_pass(
                &columns,
                in_w,
                0..out_h,
                &AxisTaps::new(in_w, out_w, filter),
            )
        } else {
            columns
        }
    };
    RgbImage {
        width,
        height,
        pixels,
    }
}

/// Resamples each of `rows` of an interleaved RGB image `src_w` wide to `taps`' output width.
fn horizontal_pass(
    src: &[u8],
    src_w: usize,
    rows: std::ops::Range<usize>,
    taps: &AxisTaps,
) -> Vec<u8> {
    let out_w = taps.first.len();
    let mut out = vec![0u8; rows.len() * out_w * 3];
    for (y, row) in rows.enumerate() {
        let line = &src[row * src_w * 3..][..src_w * 3];
        let out_line = &mut out[y * out_w * 3..][..out_w * 3];
        for x in 0..out_w {
            let (first, weights) = taps.row(x);
            let mut acc = [ROUNDING; 3];
            for (i, &tap) in weights.iter().enumerate() {
                let px = &line[(first + i) * 3..][..3];
                for c in 0..3 {
                    acc[c] += px[c] as i64 * tap as i64;
                }
            }
            for c in 0..3 {
                out_line[x * 3 + c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// Resamples the columns of `src` (`width` pixels wide, its first row being source row
/// `row_offset`) to `taps`' output height.
fn vertical_pass(src: &[u8], width: usize, row_offset: usize, taps: &AxisTaps) -> Vec<u8> {
    let out_h = taps.first.len();
    let stride = width * 3;
    let mut out = vec![0u8; out_h * stride];
    for y in 0..out_h {
        let (first, weights) = taps.row(y);
        let first = first - row_offset;
        let out_line = &mut out[y * stride..][..stride];
        for (x, value) in out_line.iter_mut().enumerate() {
            let mut acc = ROUNDING;
            for (i, &tap) in weights.iter().enumerate() {
                acc += src[(first + i) * stride + x] as i64 * tap as i64;
            }
            *value = clip8(acc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_of_each_output_sum_to_one_in_fixed_point() {
        for filter in [
            PilFilter::Bicubic,
            PilFilter::Bilinear,
            PilFilter::Lanczos,
            PilFilter::Box,
            PilFilter::Hamming,
        ] {
            let taps = AxisTaps::new(768, 336, filter);
            for i in 0..336 {
                let total: i64 = taps.row(i).1.iter().map(|&t| t as i64).sum();
                // Each tap is rounded separately, so the sum is within a few units of 1.0.
                assert!(
                    (total - (1 << PRECISION_BITS)).abs() <= taps.ksize as i64,
                    "{filter:?} row {i}: {total}"
                );
            }
        }
    }

    #[test]
    fn uniform_image_stays_uniform() {
        let image = RgbImage {
            width: 37,
            height: 23,
            pixels: [10u8, 128, 250].repeat(37 * 23),
        };
        let out = pil_resize(&image, 13, 50, PilFilter::Bicubic);
        assert_eq!((out.width, out.height), (13, 50));
        assert!(out.pixels.chunks(3).all(|p| p == [10, 128, 250]));
    }

    #[test]
    fn same_size_is_a_copy() {
        let pixels: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let image = RgbImage {
            width: 5,
            height: 4,
            pixels,
        };
        assert_eq!(pil_resize(&image, 5, 4, PilFilter::Bicubic), image);
    }
}
