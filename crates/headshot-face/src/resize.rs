//! `cv2.resize(src, (w, h))` (INTER_LINEAR) on 8-bit images, reproduced bit for bit.
//!
//! SCRFD sees the photo through this resize, and ONNX Runtime is deterministic, so matching
//! OpenCV's integer arithmetic exactly makes our detections identical to insightface's, not just
//! close. OpenCV's 8-bit bilinear path works in fixed point: 11-bit weights (`1 << 11`), a
//! horizontal pass into an i32 row buffer, then a vertical pass that (in its SIMD form, which is
//! the one that runs on x86-64 and aarch64) drops 4 bits, multiplies by the 11-bit weight keeping
//! the high 16 bits, and rounds the sum by 2 bits. Exact 2x reductions are special-cased by
//! OpenCV as INTER_AREA (mean of 2x2 blocks), and so are they here.

const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// Resizes an interleaved 8-bit image with `channels` channels to `dst_w` x `dst_h`.
/// Sizes must be non-zero and `src.len() == src_w * src_h * channels`.
pub(crate) fn resize_bilinear_u8(
    src: &[u8],
    src_w: usize,
    src_h: usize,
    channels: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<u8> {
    debug_assert_eq!(src.len(), src_w * src_h * channels);
    if dst_w == src_w && dst_h == src_h {
        return src.to_vec();
    }
    if src_w == 2 * dst_w && src_h == 2 * dst_h {
        return halve_by_area(src, src_w, channels, dst_w, dst_h);
    }

    let xs = axis_taps(src_w, dst_w, true);
    let ys = axis_taps(src_h, dst_h, false);

    // Horizontal pass for one source row: weighted sums with 11-bit weights, no rounding.
    let horizontal = |row: usize, out: &mut [i32]| {
        let line = &src[row * src_w * channels..(row + 1) * src_w * channels];
        for (dx, tap) in xs.iter().enumerate() {
            let x0 = tap.index * channels;
            let x1 = tap.next.min(src_w - 1) * channels;
            for c in 0..channels {
                out[dx * channels + c] = i32::from(line[x0 + c]) * tap.weights[0]
                    + i32::from(line[x1 + c]) * tap.weights[1];
            }
        }
    };

    let row_len = dst_w * channels;
    let mut dst = vec![0u8; row_len * dst_h];
    let mut rows = [vec![0i32; row_len], vec![0i32; row_len]];
    let mut cached: [Option<usize>; 2] = [None, None];
    for (dy, tap) in ys.iter().enumerate() {
        // Rows outside the image are clamped to the border row, as OpenCV does.
        let r0 = tap.index.min(src_h - 1);
        let r1 = tap.next.min(src_h - 1);
        // Rows advance monotonically, so the previous second row is often this first row.
        if cached[0] != Some(r0) {
            if cached[1] == Some(r0) {
                rows.swap(0, 1);
                cached.swap(0, 1);
            } else {
                horizontal(r0, &mut rows[0]);
                cached[0] = Some(r0);
            }
        }
        if cached[1] != Some(r1) {
            if r1 == r0 {
                let (first, second) = rows.split_at_mut(1);
                second[0].copy_from_slice(&first[0]);
            } else {
                horizontal(r1, &mut rows[1]);
            }
            cached[1] = Some(r1);
        }
        let (b0, b1) = (tap.weights[0], tap.weights[1]);
        let out = &mut dst[dy * row_len..(dy + 1) * row_len];
        for (x, value) in out.iter_mut().enumerate() {
            let s0 = ((rows[0][x] >> 4) * b0) >> 16;
            let s1 = ((rows[1][x] >> 4) * b1) >> 16;
            *value = ((s0 + s1 + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    dst
}

struct Tap {
    index: usize,
    next: usize,
    weights: [i32; 2],
}

/// Source index and 11-bit weights per destination coordinate (half-pixel centres).
/// `clamp_fraction`: OpenCV zeroes the fraction at the x borders; along y it clamps rows instead.
fn axis_taps(src_len: usize, dst_len: usize, clamp_fraction: bool) -> Vec<Tap> {
    let scale = 1.0 / (dst_len as f64 / src_len as f64);
    (0..dst_len)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let floor = f.floor();
            let mut fraction = f - floor;
            let mut index = floor as i64;
            if clamp_fraction {
                if index < 0 {
                    index = 0;
                    fraction = 0.0;
                }
                if index >= src_len as i64 - 1 {
                    index = src_len as i64 - 1;
                    fraction = 0.0;
                }
            }
            let w0 = ((1.0 - fraction) * COEF_SCALE).round_ties_even() as i32;
            let w1 = (fraction * COEF_SCALE).round_ties_even() as i32;
            // Negative rows (first output rows when upscaling) read row 0 twice.
            let index = index.max(0) as usize;
            let next = if clamp_fraction {
                index + 1
            } else {
                (floor as i64 + 1).max(0) as usize
            };
            Tap {
                index,
                next,
                weights: [w0, w1],
            }
        })
        .collect()
}

/// OpenCV's INTER_AREA fast path for exact 2x reductions: rounded mean of each 2x2 block.
fn halve_by_area(src: &[u8], src_w: usize, channels: usize, dst_w: usize, dst_h: usize) -> Vec<u8> {
    let stride = src_w * channels;
    let mut dst = vec![0u8; dst_w * dst_h * channels];
    for y in 0..dst_h {
        let top = &src[2 * y * stride..(2 * y + 1) * stride];
        let bottom = &src[(2 * y + 1) * stride..(2 * y + 2) * stride];
        for x in 0..dst_w {
            for c in 0..channels {
                let a = 2 * x * channels + c;
                let sum = u32::from(top[a])
                    + u32::from(top[a + channels])
                    + u32::from(bottom[a])
                    + u32::from(bottom[a + channels]);
                dst[(y * dst_w + x) * channels + c] = ((sum + 2) >> 2) as u8;
            }
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        let src: Vec<u8> = (0..4 * 3 * 3).map(|v| (v * 7 % 256) as u8).collect();
        assert_eq!(resize_bilinear_u8(&src, 4, 3, 3, 4, 3), src);
    }

    #[test]
    fn exact_halving_averages_blocks_with_rounding() {
        // One channel 4x2 -> 2x1: blocks (0,1,4,5) and (2,3,6,7) -> means 2.5 and 4.5 round up.
        let src = [0u8, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(resize_bilinear_u8(&src, 4, 2, 1, 2, 1), vec![3, 5]);
    }

    #[test]
    fn constant_image_stays_constant_when_scaled() {
        let src = vec![200u8; 7 * 5 * 3];
        for (w, h) in [(3, 2), (11, 9), (7, 13), (1, 1)] {
            let out = resize_bilinear_u8(&src, 7, 5, 3, w, h);
            assert_eq!(out.len(), w * h * 3);
            assert!(out.iter().all(|&v| v == 200), "{w}x{h}: {out:?}");
        }
    }

    #[test]
    fn upscaled_ramp_is_monotonic_and_keeps_its_ends() {
        let src: Vec<u8> = (0..8).map(|v| (v * 36) as u8).collect();
        let out = resize_bilinear_u8(&src, 8, 1, 1, 20, 1);
        assert!(out.windows(2).all(|w| w[0] <= w[1]), "{out:?}");
        assert_eq!(out[0], 0);
        assert_eq!(out[19], 252);
    }
}
