//! Face alignment as insightface's `face_align.norm_crop`: a least-squares similarity transform
//! from the 5 detected keypoints to ArcFace's template, then `cv2.warpAffine` (bilinear, black
//! border).

use headshot_core::RgbImage;

/// ArcFace's 5-point template for a 112x112 crop: left eye, right eye, nose tip, left and right
/// mouth corners (insightface `arcface_dst`).
pub const ARCFACE_TEMPLATE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// A 2x3 affine matrix mapping source (photo) coordinates to destination (crop) coordinates.
pub type Affine = [[f64; 3]; 2];

/// The template scaled to a `size` x `size` crop, like `estimate_norm`: sizes divisible by 112
/// scale it by `size / 112`; sizes divisible by 128 scale by `size / 128` and shift x by 8 px
/// (at 128 px). Other sizes are not defined by the reference.
#[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.85
pub fn template_for_size(size: u32) -> Option<[[f32; 2]; 5]> {
    let (ratio, shift_x) = if size % 112 == 0 {
        (size as f32 / 112.0, 0.0)
    } else if size % 128 == 0 {
        let ratio = size as f32 / 128.0;
        (ratio, 8.0 * ratio)
    } else {
        return None;
    };
    Some(ARCFACE_TEMPLATE_112.map(|[x, y]| [x * ratio + shift_x, y * ratio]))
}

/// Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping `src`
/// onto `dst`: Umeyama's method with scale, as `skimage.transform.SimilarityTransform.estimate`.
/// In 2-D the SVD solution has a closed form: with `A = dst_c^T src_c`, the rotation angle is
/// `atan2(A10 - A01, A00 + A11)` and `scale = |(A00 + A11, A10 - A01)| / sum |src_c|^2`; this
/// equals Umeyama's `trace(S D) / var` including its reflection correction.
/// Returns `None` when the source points coincide (no transform exists).
pub fn estimate_similarity(src: &[[f32; 2]; 5], dst: &[[f32; 2]; 5]) -> Option<Affine> {
    let n = src.len() as f64;
    let mean = |points: &[[f32; 2]; 5]| {
        let (sx, sy) = points.iter().fold((0.0, 0.0), |(sx, sy), p| {
            (sx + f64::from(p[0]), sy + f64::from(p[1]))
        });
        (sx / n, sy / n)
    };
    let (src_mx, src_my) = mean(src);
    let (dst_mx, dst_my) = mean(dst);
    let (mut a00, mut a01, mut a10, mut a11, mut src_var) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (f64::from(s[0]) - src_mx, f64::from(s[1]) - src_my);
        let (dx, dy) = (f64::from(d[0]) - dst_mx, f64::from(d[1]) - dst_my);
        a00 += dx * sx;
        a01 += dx * sy;
        a10 += dy * sx;
        a11 += dy * sy;
        src_var += sx * sx + sy * sy;
    }
    if !src_var.is_finite() || src_var <= f64::EPSILON {
        return None;
    }
    let (c, s) = (a00 + a11, a10 - a01);
    let norm = c.hypot(s);
    if norm.is_nan() || norm <= 0.0 {
        return None;
    }
    let scale = norm / src_var;
    let (cos, sin) = (c / norm, s / norm);
    let (m00, m01, m10, m11) = (scale * cos, -scale * sin, scale * sin, scale * cos);
    Some([
        [m00, m01, dst_mx - (m00 * src_mx + m01 * src_my)],
        [m10, m11, dst_my - (m10 * src_mx + m11 * src_my)],
    ])
}

/// The transform `norm_crop` uses to cut a `size` px face crop from the 5 keypoints.
pub fn norm_crop_transform(keypoints: &[[f32; 2]; 5], size: u32) -> Option<Affine> {
    estimate_similarity(keypoints, &template_for_size(size)?)
}

/// `cv2.warpAffine(img, m, (w, h), flags=INTER_LINEAR, borderValue=0)` for 8-bit RGB.
///
/// OpenCV inverts `m` (in f64) and samples the source at `inv * (x, y, 1)` for every output pixel.
/// OpenCV 5 does this in f32 with a lerp-form bilinear blend and round-half-even; we follow that
/// order of operations (max 1/255 apart from it, see the goldens' tests). Neighbours outside the
/// source count as black.
pub fn warp_affine(src: &RgbImage, m: &Affine, out_w: u32, out_h: u32) -> RgbImage {
    let inv = invert_affine(m).map(|row| row.map(|v| v as f32));
    let (w, h) = (src.width as i64, src.height as i64);
    let pixel = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= w || y >= h {
            return [0.0; 3];
        }
        let i = ((y * w + x) * 3) as usize;
        [
            f32::from(src.pixels[i]),
            f32::from(src.pixels[i + 1]),
            f32::from(src.pixels[i + 2]),
        ]
    };
    let mut pixels = vec![0u8; out_w as usize * out_h as usize * 3];
    for y in 0..out_h {
        let yf = y as f32;
        let row_x = inv[0][1] * yf + inv[0][2];
        let row_y = inv[1][1] * yf + inv[1][2];
        for x in 0..out_w {
            let xf = x as f32;
            let sx = inv[0][0] * xf + row_x;
            let sy = inv[1][0] * xf + row_y;
            if !sx.is_finite() || !sy.is_finite() {
                continue;
            }
            let (fx0, fy0) = (sx.floor(), sy.floor());
            let (ax, ay) = (sx - fx0, sy - fy0);
            let (x0, y0) = (fx0 as i64, fy0 as i64);
            let (p00, p01) = (pixel(x0, y0), pixel(x0 + 1, y0));
            let (p10, p11) = (pixel(x0, y0 + 1), pixel(x0 + 1, y0 + 1));
            let out = ((y * out_w + x) * 3) as usize;
            for c in 0..3 {
                let top = p00[c] + ax * (p01[c] - p00[c]);
                let bottom = p10[c] + ax * (p11[c] - p10[c]);
                let value = top + ay * (bottom - top);
                pixels[out + c] = value.round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage {
        width: out_w,
        height: out_h,
        pixels,
    }
}

/// `cv2.invertAffineTransform`; a singular matrix maps everything to the origin, like OpenCV.
fn invert_affine(m: &Affine) -> Affine {
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    let d = if det != 0.0 { 1.0 / det } else { 0.0 };
    let (a11, a22, a12, a21) = (m[1][1] * d, m[0][0] * d, -m[0][1] * d, -m[1][0] * d);
    let b1 = -a11 * m[0][2] - a12 * m[1][2];
    let b2 = -a21 * m[0][2] - a22 * m[1][2];
    [[a11, a12, b1], [a21, a22, b2]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(m: &Affine, p: [f32; 2]) -> [f64; 2] {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        [
            m[0][0] * x + m[0][1] * y + m[0][2],
            m[1][0] * x + m[1][1] * y + m[1][2],
        ]
    }

    #[test]
    fn recovers_a_known_similarity() {
        // dst = 1.7 * R(30deg) * src + (12, -4)
        let (s, a) = (1.7f64, 30f64.to_radians());
        let src = [
            [10.0, 20.0],
            [40.0, 22.0],
            [25.0, 35.0],
            [14.0, 50.0],
            [38.0, 49.0],
        ];
        let dst = src.map(|[x, y]| {
            let (x, y) = (f64::from(x), f64::from(y));
            [
                (s * (a.cos() * x - a.sin() * y) + 12.0) as f32,
                (s * (a.sin() * x + a.cos() * y) - 4.0) as f32,
            ]
        });
        let m = estimate_similarity(&src, &dst).expect("non-degenerate");
        assert!(
            (m[0][0] - s * a.cos()).abs() < 1e-5 && (m[1][0] - s * a.sin()).abs() < 1e-5,
            "{m:?}"
        );
        for (p, q) in src.iter().zip(&dst) {
            let r = apply(&m, *p);
            assert!((r[0] - f64::from(q[0])).abs() < 1e-3 && (r[1] - f64::from(q[1])).abs() < 1e-3);
        }
    }

    #[test]
    fn mirrored_points_still_give_a_rotation_not_a_reflection() {
        let src = ARCFACE_TEMPLATE_112;
        let dst = src.map(|[x, y]| [112.0 - x, y]);
        let m = estimate_similarity(&src, &dst).expect("non-degenerate");
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        assert!(det > 0.0, "{m:?}");
    }

    #[test]
    fn coincident_points_have_no_transform() {
        assert!(estimate_similarity(&[[3.0, 3.0]; 5], &ARCFACE_TEMPLATE_112).is_none());
    }

    #[test]
    fn template_scales_like_estimate_norm() {
        assert_eq!(template_for_size(112), Some(ARCFACE_TEMPLATE_112));
        let t224 = template_for_size(224).expect("224 is a multiple of 112");
        assert_eq!(t224[0], [38.2946 * 2.0, 51.6963 * 2.0]);
        let t128 = template_for_size(128).expect("128 is supported");
        assert_eq!(t128[0], [38.2946 + 8.0, 51.6963]);
        assert!(template_for_size(100).is_none());
    }

    #[test]
    fn identity_warp_copies_and_outside_is_black() {
        let src = RgbImage {
            width: 3,
            height: 2,
            pixels: (0..18).map(|v| v * 10).collect(),
        };
        let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        assert_eq!(warp_affine(&src, &id, 3, 2), src);
        let shifted = [[1.0, 0.0, 10.0], [0.0, 1.0, 0.0]];
        assert!(warp_affine(&src, &shifted, 3, 2)
            .pixels
            .iter()
            .all(|&v| v == 0));
    }

    #[test]
    fn half_pixel_shift_blends_neighbours() {
        let src = RgbImage {
            width: 2,
            height: 1,
            pixels: vec![0, 0, 0, 100, 200, 255],
        };
        // dst(x) = src(x + 0.5): forward map is x - 0.5.
        let m = [[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]];
        let out = warp_affine(&src, &m, 1, 1);
        // Row below is outside (black) only if y + 0 fraction > 0; here fy = 0.
        assert_eq!(out.pixels, vec![50, 100, 128]);
    }
}
