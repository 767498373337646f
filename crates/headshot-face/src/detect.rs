//! SCRFD face detection, step for step as insightface 0.7.3 (`model_zoo/scrfd.py`).
//!
//! Pre-processing: resize keeping the aspect ratio so the image fits the detector input
//! (`cv2.resize`, bilinear), paste it top-left on a black canvas, RGB, NCHW, `(x - 127.5) / 128`.
//! Post-processing: per stride, anchor centres on the feature grid (row-major, `anchors` copies
//! per cell), distances times the stride, boxes `(cx - l, cy - t, cx + r, cy + b)`, keypoints
//! `(cx + dx, cy + dy)`; keep score >= threshold; map back by `det_scale`; sort by score; greedy
//! NMS with pixel-inclusive areas. Arithmetic is f32 like the numpy reference.

use headshot_core::RgbImage;

use crate::resize::resize_bilinear_u8;

const INPUT_MEAN: f32 = 127.5;
const INPUT_STD: f32 = 128.0;

/// How the detector's outputs are arranged; told apart by their count, as insightface does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScrfdLayout {
    pub strides: Vec<usize>,
    pub anchors_per_cell: usize,
}

impl ScrfdLayout {
    /// 9 outputs: strides 8/16/32, 2 anchors per cell (scores, boxes, keypoints per stride);
    /// 15 outputs: strides 8..128, 1 anchor. 6/10 outputs are SCRFD models without keypoints,
    /// which cannot drive the alignment.
    pub(crate) fn from_output_count(count: usize) -> Result<Self, String> {
        match count {
            9 => Ok(Self { strides: vec![8, 16, 32], anchors_per_cell: 2 }),
            15 => Ok(Self { strides: vec![8, 16, 32, 64, 128], anchors_per_cell: 1 }),
            6 | 10 => Err(format!(
                "this SCRFD model has {count} outputs and predicts no keypoints; a *_kps / *_bnkps model \
                 (9 or 15 outputs, e.g. det_10g.onnx or scrfd_500m_bnkps.onnx) is needed for alignment"
            )),
            other => Err(format!(
                "expected an SCRFD detector with 9 or 15 outputs (scores, boxes, keypoints per stride), found {other}"
            )),
        }
    }
}

/// The detector input for one image and the scale that maps it back.
pub(crate) struct DetectorInput {
    /// [1, 3, height, width], normalised RGB.
    pub tensor: Vec<f32>,
    pub width: usize,
    pub height: usize,
    /// `resized_height / image_height` (f64 in the reference).
    pub det_scale: f64,
}

pub(crate) fn preprocess(image: &RgbImage, input_w: usize, input_h: usize) -> DetectorInput {
    let (img_w, img_h) = (image.width as usize, image.height as usize);
    let im_ratio = img_h as f64 / img_w as f64;
    let model_ratio = input_h as f64 / input_w as f64;
    // `int(...)` truncation as in Python; at least one pixel so extreme aspect ratios still run
    // (the reference would crash in cv2.resize there).
    let (new_w, new_h) = if im_ratio > model_ratio {
        (
            ((input_h as f64 / im_ratio) as usize).clamp(1, input_w),
            input_h,
        )
    } else {
        (
            input_w,
            ((input_w as f64 * im_ratio) as usize).clamp(1, input_h),
        )
    };
    let det_scale = new_h as f64 / img_h as f64;
    let resized = resize_bilinear_u8(&image.pixels, img_w, img_h, 3, new_w, new_h);

    // The black canvas normalises to (0 - 127.5) / 128.
    let plane = input_w * input_h;
    let mut tensor = vec![(0.0 - INPUT_MEAN) / INPUT_STD; 3 * plane];
    for y in 0..new_h {
        for x in 0..new_w {
            let src = (y * new_w + x) * 3;
            let dst = y * input_w + x;
            for c in 0..3 {
                tensor[c * plane + dst] = (f32::from(resized[src + c]) - INPUT_MEAN) / INPUT_STD;
            }
        }
    }
    DetectorInput {
        tensor,
        width: input_w,
        height: input_h,
        det_scale,
    }
}

/// One detection in original image coordinates.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Detection {
    pub bbox: [f32; 4],
    pub score: f32,
    pub keypoints: [[f32; 2]; 5],
}

/// Decodes the raw outputs (in model order) into detections above `threshold`, mapped to the
/// original image, sorted by descending score, then NMS at `nms_threshold`.
/// `outputs[i]` is the flattened tensor; a leading batch axis of 1 is irrelevant to the layout.
pub(crate) fn postprocess(
    outputs: &[&[f32]],
    layout: &ScrfdLayout,
    input: &DetectorInput,
    threshold: f32,
    nms_threshold: f32,
) -> Result<Vec<Detection>, String> {
    let levels = layout.strides.len();
    if outputs.len() != 3 * levels {
        return Err(format!(
            "expected {} outputs, got {}",
            3 * levels,
            outputs.len()
        ));
    }
    let scale = input.det_scale as f32;
    let mut candidates: Vec<(usize, Detection)> = Vec::new();
    for (level, &stride) in layout.strides.iter().enumerate() {
        let (grid_h, grid_w) = (input.height / stride, input.width / stride);
        let anchors = grid_h * grid_w * layout.anchors_per_cell;
        let (scores, boxes, kps) = (
            outputs[level],
            outputs[level + levels],
            outputs[level + 2 * levels],
        );
        if scores.len() != anchors || boxes.len() != anchors * 4 || kps.len() != anchors * 10 {
            return Err(format!(
                "stride {stride}: expected {anchors} anchors (scores {anchors}, boxes {}, keypoints {}), got {}, {}, {}",
                anchors * 4,
                anchors * 10,
                scores.len(),
                boxes.len(),
                kps.len()
            ));
        }
        let stride_f = stride as f32;
        for (anchor, &score) in scores.iter().enumerate() {
            // NaN scores are dropped too.
            if score.is_nan() || score < threshold {
                continue;
            }
            let cell = anchor / layout.anchors_per_cell;
            let cx = ((cell % grid_w) * stride) as f32;
            let cy = ((cell / grid_w) * stride) as f32;
            let d = &boxes[anchor * 4..anchor * 4 + 4];
            let bbox = [
                (cx - d[0] * stride_f) / scale,
                (cy - d[1] * stride_f) / scale,
                (cx + d[2] * stride_f) / scale,
                (cy + d[3] * stride_f) / scale,
            ];
            let k = &kps[anchor * 10..anchor * 10 + 10];
            let keypoints = std::array::from_fn(|i| {
                [
                    (cx + k[2 * i] * stride_f) / scale,
                    (cy + k[2 * i + 1] * stride_f) / scale,
                ]
            });
            candidates.push((
                candidates.len(),
                Detection {
                    bbox,
                    score,
                    keypoints,
                },
            ));
        }
    }
    // numpy: `scores.argsort()[::-1]`; its sort is stable on these sizes, so equal scores come
    // out latest-first after the reversal.
    candidates.sort_by(|(ia, a), (ib, b)| b.score.total_cmp(&a.score).then(ib.cmp(ia)));
    let sorted: Vec<Detection> = candidates.into_iter().map(|(_, d)| d).collect();
    Ok(nms(sorted, nms_threshold))
}

/// Greedy NMS over score-sorted detections; keeps a box when its IoU with every kept box is
/// <= `threshold`, areas counted pixel-inclusively (`(x2 - x1 + 1) * (y2 - y1 + 1)`).
pub(crate) fn nms(sorted: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut suppressed = vec![false; sorted.len()];
    let mut kept = Vec::new();
    for i in 0..sorted.len() {
        if suppressed[i] {
            continue;
        }
        let a = &sorted[i].bbox;
        let area_a = area(a);
        for j in i + 1..sorted.len() {
            if suppressed[j] {
                continue;
            }
            let b = &sorted[j].bbox;
            let w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
            let h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
            let inter = w * h;
            let overlap = inter / (area_a + area(b) - inter);
            // NaN overlap (degenerate boxes) is not "<= threshold" in numpy either.
            if overlap.is_nan() || overlap > threshold {
                suppressed[j] = true;
            }
        }
        kept.push(sorted[i].clone());
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(bbox: [f32; 4], score: f32) -> Detection {
        Detection {
            bbox,
            score,
            keypoints: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn layouts_follow_insightface() {
        assert_eq!(
            ScrfdLayout::from_output_count(9).unwrap().strides,
            vec![8, 16, 32]
        );
        assert_eq!(
            ScrfdLayout::from_output_count(15).unwrap().anchors_per_cell,
            1
        );
        assert!(ScrfdLayout::from_output_count(6)
            .unwrap_err()
            .contains("keypoints"));
        assert!(ScrfdLayout::from_output_count(2).is_err());
    }

    #[test]
    fn nms_drops_overlaps_above_threshold_only() {
        let boxes = vec![
            det([0.0, 0.0, 9.0, 9.0], 0.9),
            det([1.0, 1.0, 10.0, 10.0], 0.8), // IoU 81/119 = 0.68 -> dropped
            det([6.0, 0.0, 15.0, 9.0], 0.7),  // IoU 40/160 = 0.25 with the first -> kept
            det([20.0, 20.0, 30.0, 30.0], 0.6),
        ];
        let kept: Vec<f32> = nms(boxes, 0.4).iter().map(|d| d.score).collect();
        assert_eq!(kept, vec![0.9, 0.7, 0.6]);
    }

    #[test]
    fn preprocess_pastes_top_left_and_normalises() {
        // 4x2 white image into an 8x8 input: resized to 8x4, bottom half stays black.
        let image = RgbImage {
            width: 4,
            height: 2,
            pixels: vec![255; 4 * 2 * 3],
        };
        let input = preprocess(&image, 8, 8);
        assert_eq!(input.det_scale, 2.0);
        let white = (255.0 - 127.5) / 128.0;
        let black = -127.5 / 128.0;
        for c in 0..3 {
            assert_eq!(input.tensor[c * 64], white);
            assert_eq!(input.tensor[c * 64 + 3 * 8 + 7], white);
            assert_eq!(input.tensor[c * 64 + 4 * 8], black);
        }
    }

    #[test]
    fn postprocess_decodes_anchor_distances() {
        // A 32x32 input with strides 8/16/32 and 2 anchors: grids 4x4, 2x2, 1x1.
        let layout = ScrfdLayout::from_output_count(9).unwrap();
        let input = DetectorInput {
            tensor: vec![],
            width: 32,
            height: 32,
            det_scale: 0.5,
        };
        let counts = [32usize, 8, 2];
        let mut scores: Vec<Vec<f32>> = counts.iter().map(|&n| vec![0.1; n]).collect();
        let mut boxes: Vec<Vec<f32>> = counts.iter().map(|&n| vec![0.0; n * 4]).collect();
        let kps: Vec<Vec<f32>> = counts.iter().map(|&n| vec![0.5; n * 10]).collect();
        // Stride 16, cell (x=1, y=0), second anchor: index 3; centre (16, 0).
        scores[1][3] = 0.9;
        boxes[1][12..16].copy_from_slice(&[1.0, 0.0, 0.5, 2.0]);
        let outputs: Vec<&[f32]> = scores
            .iter()
            .chain(&boxes)
            .chain(&kps)
            .map(|v| v.as_slice())
            .collect();
        let found = postprocess(&outputs, &layout, &input, 0.5, 0.4).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].bbox, [0.0, 0.0, 48.0, 64.0]);
        assert_eq!(found[0].keypoints[0], [48.0, 16.0]);
        assert_eq!(found[0].score, 0.9);
    }
}
