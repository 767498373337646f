//! The face analyzer: detection, alignment and embedding with the two insightface models.

use std::path::PathBuf;

use headshot_core::RgbImage;

use crate::align::{norm_crop_transform, warp_affine};
use crate::decode::{decode_image, DecodeLimits, DecodedImage};
use crate::detect::{self, ScrfdLayout};
use crate::engine::{FaceModelBackend, OrtModel, OrtSettings};
use crate::error::FaceError;

/// The two ONNX files of an insightface model pack: `det_10g.onnx` + `w600k_r50.onnx`
/// (buffalo_l, the production default) or `scrfd_500m_bnkps.onnx` + `w600k_mbf.onnx` (buffalo_s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaceModelPaths {
    /// SCRFD detector with keypoints.
    pub detector: PathBuf,
    /// ArcFace recogniser (512-d).
    pub recognizer: PathBuf,
}

/// Knobs of the analyzer; the defaults are insightface's `FaceAnalysis.prepare(det_size=(640, 640))`.
#[derive(Clone, Debug, PartialEq)]
pub struct FaceAnalyzerOptions {
    /// `libonnxruntime.so` to load, or a folder holding it (such as the `onnxruntime` wheel's
    /// `capi/`); `None` reads the `ORT_DYLIB_PATH` environment variable (file or folder).
    pub onnxruntime_library: Option<PathBuf>,
    /// Threads ONNX Runtime uses inside one operator; `None` lets it choose (all cores).
    pub intra_threads: Option<usize>,
    /// Let ONNX Runtime's idle pool threads spin-wait for work (its default). Off by default
    /// here: the two sessions run one after the other beside candle, and spinning threads of one
    /// session steal the CPU the next one needs.
    pub onnxruntime_spinning: bool,
    /// Run the models with ONNX Runtime's CUDA provider on this device ordinal (crate feature
    /// `cuda`, the onnxruntime-gpu build of the library); `None`: on the CPU.
    pub cuda_device: Option<usize>,
    /// Minimum detection score (insightface `det_thresh`, 0.5).
    pub detection_threshold: f32,
    /// IoU above which a lower-scored box is suppressed (insightface `nms_thresh`, 0.4).
    pub nms_threshold: f32,
    /// Detector input (width, height) when the model's input size is dynamic; a model with a
    /// fixed input size uses its own, as insightface does.
    pub detector_input_size: (u32, u32),
    /// Limits for [`FaceAnalyzer::analyze_largest`]'s decoding.
    pub decode_limits: DecodeLimits,
}

impl Default for FaceAnalyzerOptions {
    fn default() -> Self {
        Self {
            onnxruntime_library: None,
            intra_threads: None,
            onnxruntime_spinning: false,
            cuda_device: None,
            detection_threshold: 0.5,
            nms_threshold: 0.4,
            detector_input_size: (640, 640),
            decode_limits: DecodeLimits::default(),
        }
    }
}

/// A detected face in image pixel coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectedFace {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Detector confidence in [0, 1].
    pub score: f32,
    /// Left eye, right eye, nose tip, left mouth corner, right mouth corner, as `[x, y]`.
    pub keypoints: [[f32; 2]; 5],
}

impl DetectedFace {
    /// Box area as insightface measures it for face selection (`(x2 - x1) * (y2 - y1)`).
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1])
    }
}

/// A face with everything the generation pipeline needs.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyzedFace {
    pub bbox: [f32; 4],
    pub score: f32,
    pub keypoints: [[f32; 2]; 5],
    /// ArcFace identity embedding, L2-normalised (insightface `normed_embedding`), 512 values.
    pub embedding: Vec<f32>,
    /// The 112x112 aligned crop the embedding was computed from.
    pub aligned_112: RgbImage,
    /// The 224x224 aligned crop (same alignment, template x2), the CLIP input of FaceID-PlusV2.
    pub aligned_224: RgbImage,
}

/// SCRFD + ArcFace, loaded once. `Send + Sync`; calls are serialised per model.
pub struct FaceAnalyzer {
    detector: Box<dyn FaceModelBackend>,
    detector_layout: ScrfdLayout,
    detector_input: (usize, usize),
    recognizer: Box<dyn FaceModelBackend>,
    recognizer_size: u32,
    options: FaceAnalyzerOptions,
}

impl FaceAnalyzer {
    /// Loads both models into ONNX Runtime and checks their layout.
    pub fn load(paths: &FaceModelPaths, options: &FaceAnalyzerOptions) -> Result<Self, FaceError> {
        let settings = OrtSettings {
            library: options.onnxruntime_library.clone(),
            intra_threads: options.intra_threads,
            spinning: options.onnxruntime_spinning,
            cuda_device: options.cuda_device,
        };
        let detector = OrtModel::load(&paths.detector, "face detector (SCRFD)", &settings)?;
        let recognizer = OrtModel::load(&paths.recognizer, "face recogniser (ArcFace)", &settings)?;
        Self::from_backends(
            Box::new(detector),
            &paths.detector,
            Box::new(recognizer),
            &paths.recognizer,
            options,
        )
    }

    fn from_backends(
        detector: Box<dyn FaceModelBackend>,
        detector_path: &std::path::Path,
        recognizer: Box<dyn FaceModelBackend>,
        recognizer_path: &std::path::Path,
        options: &FaceAnalyzerOptions,
    ) -> Result<Self, FaceError> {
        let layout_err = |path: &std::path::Path, reason: String| FaceError::ModelLayout {
            path: path.to_path_buf(),
            reason,
        };
        let detector_layout = ScrfdLayout::from_output_count(detector.output_count())
            .map_err(|r| layout_err(detector_path, r))?;
        // insightface: a fixed model input size wins over det_size.
        let dim = |dims: &[Option<usize>], axis: usize| dims.get(axis).copied().flatten();
        let dims = detector.input_dims();
        let (default_w, default_h) = options.detector_input_size;
        let detector_input = match (dim(dims, 3), dim(dims, 2)) {
            (Some(w), Some(h)) => (w, h),
            _ => (default_w as usize, default_h as usize),
        };
        let max_stride = *detector_layout.strides.iter().max().unwrap_or(&32);
        if detector_input.0 < max_stride || detector_input.1 < max_stride {
            return Err(layout_err(
                detector_path,
                format!(
                    "detector input {}x{} is smaller than its largest stride {max_stride}",
                    detector_input.0, detector_input.1
                ),
            ));
        }

        let dims = recognizer.input_dims();
        let recognizer_size = match (dim(dims, 2), dim(dims, 3)) {
            (Some(h), Some(w)) if h == w => h as u32,
            (None, None) => 112,
            other => {
                return Err(layout_err(
                    recognizer_path,
                    format!("expected a square ArcFace input, found {other:?}"),
                ))
            }
        };
        if norm_crop_transform(&crate::align::ARCFACE_TEMPLATE_112, recognizer_size).is_none() {
            return Err(layout_err(
                recognizer_path,
                format!("ArcFace input {recognizer_size} px is not a multiple of 112 or 128"),
            ));
        }
        if recognizer.output_count() != 1 {
            return Err(layout_err(
                recognizer_path,
                format!(
                    "expected one embedding output, found {}",
                    recognizer.output_count()
                ),
            ));
        }
        Ok(Self {
            detector,
            detector_layout,
            detector_input,
            recognizer,
            recognizer_size,
            options: options.clone(),
        })
    }

    /// Detector input size in use (width, height).
    pub fn detector_input_size(&self) -> (usize, usize) {
        self.detector_input
    }

    /// All faces in the image, sorted by detection score (highest first), after NMS —
    /// insightface's `FaceAnalysis.get` order.
    pub fn analyze_all(&self, image: &DecodedImage) -> Result<Vec<DetectedFace>, FaceError> {
        if image.width == 0
            || image.height == 0
            || image.pixels.len() != image.width as usize * image.height as usize * 3
        {
            return Err(FaceError::UnreadableImage {
                reason: format!(
                    "the RGB buffer does not match its size {}x{}",
                    image.width, image.height
                ),
            });
        }
        let (input_w, input_h) = self.detector_input;
        let mut input = detect::preprocess(image, input_w, input_h);
        let tensor = std::mem::take(&mut input.tensor);
        let outputs = self.detector.run(tensor, [1, 3, input_h, input_w])?;
        let slices: Vec<&[f32]> = outputs.iter().map(|o| o.data.as_slice()).collect();
        let detections = detect::postprocess(
            &slices,
            &self.detector_layout,
            &input,
            self.options.detection_threshold,
            self.options.nms_threshold,
        )
        .map_err(|reason| FaceError::Inference {
            model: "face detector (SCRFD)",
            reason,
        })?;
        Ok(detections
            .into_iter()
            .map(|d| DetectedFace {
                bbox: d.bbox,
                score: d.score,
                keypoints: d.keypoints,
            })
            .collect())
    }

    /// Aligns `face` at 112 and 224 px and computes its identity embedding.
    pub fn embed(
        &self,
        image: &DecodedImage,
        face: &DetectedFace,
    ) -> Result<AnalyzedFace, FaceError> {
        let crop = |size: u32| -> Result<RgbImage, FaceError> {
            // Coincident keypoints admit no similarity transform: nothing usable was found.
            let transform = norm_crop_transform(&face.keypoints, size).ok_or(FaceError::NoFace)?;
            Ok(warp_affine(image, &transform, size, size))
        };
        let aligned_112 = crop(112)?;
        let aligned_224 = crop(224)?;
        let rec_crop = match self.recognizer_size {
            112 => aligned_112.clone(),
            224 => aligned_224.clone(),
            other => crop(other)?,
        };
        let embedding = self.embedding_of(&rec_crop)?;
        Ok(AnalyzedFace {
            bbox: face.bbox,
            score: face.score,
            keypoints: face.keypoints,
            embedding,
            aligned_112,
            aligned_224,
        })
    }

    /// Decodes the photo, picks the largest face (bounding-box area; ties go to the higher
    /// score) and analyses it. insightface's own `max_num` selection also weighs distance to the
    /// image centre; for a head-shot request the biggest face is the subject, so we use area.
    pub fn analyze_largest(&self, image_bytes: &[u8]) -> Result<AnalyzedFace, FaceError> {
        let image = decode_image(image_bytes, &self.options.decode_limits)?;
        self.analyze_largest_decoded(&image)
    }

    /// [`Self::analyze_largest`] on an already decoded image.
    pub fn analyze_largest_decoded(&self, image: &DecodedImage) -> Result<AnalyzedFace, FaceError> {
        let faces = self.analyze_all(image)?;
        let largest = largest_face(&faces).ok_or(FaceError::NoFace)?;
        self.embed(image, largest)
    }

    /// Decodes the photo and analyses its `index`-th face by size (0: the largest, as
    /// [`Self::analyze_largest`]; ties in the detector's order). Also returns how many faces
    /// the photo shows.
    pub fn analyze_by_size(
        &self,
        image_bytes: &[u8],
        index: usize,
    ) -> Result<(AnalyzedFace, usize), FaceError> {
        let image = decode_image(image_bytes, &self.options.decode_limits)?;
        let faces = self.analyze_all(&image)?;
        if faces.is_empty() {
            return Err(FaceError::NoFace);
        }
        let by_size = faces_by_size(&faces);
        let face = by_size.get(index).ok_or(FaceError::FaceIndexOutOfRange {
            index,
            found: faces.len(),
        })?;
        Ok((self.embed(&image, face)?, faces.len()))
    }

    /// The identity embedding alone (no 224 px crop) of the largest face in `image`; `None`
    /// when it shows no usable face. What the likeness score of a generated image needs.
    pub fn identity_of_largest(&self, image: &DecodedImage) -> Result<Option<Vec<f32>>, FaceError> {
        let faces = self.analyze_all(image)?;
        let Some(face) = largest_face(&faces) else {
            return Ok(None);
        };
        let Some(transform) = norm_crop_transform(&face.keypoints, self.recognizer_size) else {
            return Ok(None);
        };
        let crop = warp_affine(
            image,
            &transform,
            self.recognizer_size,
            self.recognizer_size,
        );
        self.embedding_of(&crop).map(Some)
    }

    /// ArcFace on an aligned crop: RGB, NCHW, `(x - 127.5) / 127.5`, then L2 normalisation.
    fn embedding_of(&self, crop: &RgbImage) -> Result<Vec<f32>, FaceError> {
        let size = crop.width as usize;
        let plane = size * size;
        // cv2.dnn.blobFromImage multiplies by the f32 scale factor rather than dividing.
        let scale = (1.0f64 / 127.5) as f32;
        let mut tensor = vec![0f32; 3 * plane];
        for (i, rgb) in crop.pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                tensor[c * plane + i] = (f32::from(rgb[c]) - 127.5) * scale;
            }
        }
        let outputs = self.recognizer.run(tensor, [1, 3, size, size])?;
        let raw = outputs
            .into_iter()
            .next()
            .map(|o| o.data)
            .unwrap_or_default();
        if raw.is_empty() {
            return Err(FaceError::Inference {
                model: "face recogniser (ArcFace)",
                reason: "empty output".into(),
            });
        }
        let norm = raw
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if !norm.is_finite() || norm <= 0.0 {
            return Err(FaceError::Inference {
                model: "face recogniser (ArcFace)",
                reason: format!("embedding norm is {norm}"),
            });
        }
        Ok(raw.iter().map(|&v| (f64::from(v) / norm) as f32).collect())
    }
}

/// The faces from largest to smallest box area (the documented order of `face_index`); a stable
/// sort, so equal areas keep the detector's order (higher score first).
pub fn faces_by_size(faces: &[DetectedFace]) -> Vec<&DetectedFace> {
    let mut by_size: Vec<&DetectedFace> = faces.iter().collect();
    by_size.sort_by(|a, b| b.area().total_cmp(&a.area()));
    by_size
}

/// The largest face by box area; ties go to the earlier one, i.e. the higher detection score.
pub fn largest_face(faces: &[DetectedFace]) -> Option<&DetectedFace> {
    faces
        .iter()
        .fold(None::<&DetectedFace>, |best, face| match best {
            Some(b) if b.area() >= face.area() => Some(b),
            _ => Some(face),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::OutputTensor;
    use std::path::Path;

    /// A stand-in model: declared input dims, and outputs of the given lengths filled with `fill`.
    struct FakeModel {
        dims: Vec<Option<usize>>,
        outputs: Vec<usize>,
        fill: f32,
    }

    impl FaceModelBackend for FakeModel {
        fn input_dims(&self) -> &[Option<usize>] {
            &self.dims
        }
        fn output_count(&self) -> usize {
            self.outputs.len()
        }
        fn run(&self, input: Vec<f32>, shape: [usize; 4]) -> Result<Vec<OutputTensor>, FaceError> {
            assert_eq!(input.len(), shape.iter().product::<usize>());
            Ok(self
                .outputs
                .iter()
                .map(|&n| OutputTensor {
                    data: vec![self.fill; n],
                })
                .collect())
        }
    }

    /// SCRFD-shaped outputs for a `size` x `size` input, 2 anchors per cell.
    fn scrfd_outputs(size: usize) -> Vec<usize> {
        let anchors: Vec<usize> = [8, 16, 32]
            .iter()
            .map(|s| (size / s) * (size / s) * 2)
            .collect();
        anchors
            .iter()
            .copied()
            .chain(anchors.iter().map(|a| a * 4))
            .chain(anchors.iter().map(|a| a * 10))
            .collect()
    }

    fn build(detector: FakeModel, recognizer: FakeModel) -> Result<FaceAnalyzer, FaceError> {
        FaceAnalyzer::from_backends(
            Box::new(detector),
            Path::new("det.onnx"),
            Box::new(recognizer),
            Path::new("rec.onnx"),
            &FaceAnalyzerOptions::default(),
        )
    }

    fn arcface() -> FakeModel {
        FakeModel {
            dims: vec![None, Some(3), Some(112), Some(112)],
            outputs: vec![512],
            fill: 0.5,
        }
    }

    #[test]
    fn detector_without_keypoints_is_rejected() {
        let detector = FakeModel {
            dims: vec![None, Some(3), None, None],
            outputs: vec![1; 6],
            fill: 0.0,
        };
        match build(detector, arcface()) {
            Err(FaceError::ModelLayout { path, reason }) => {
                assert_eq!(path, Path::new("det.onnx"));
                assert!(reason.contains("keypoints"), "{reason}");
            }
            other => panic!("expected ModelLayout, got {:?}", other.err()),
        }
    }

    #[test]
    fn recognizer_needs_one_output_and_a_square_input() {
        let detector = || FakeModel {
            dims: vec![None, Some(3), None, None],
            outputs: scrfd_outputs(640),
            fill: 0.0,
        };
        let two_outputs = FakeModel {
            outputs: vec![512, 512],
            ..arcface()
        };
        assert!(matches!(
            build(detector(), two_outputs),
            Err(FaceError::ModelLayout { .. })
        ));
        let odd = FakeModel {
            dims: vec![None, Some(3), Some(100), Some(112)],
            ..arcface()
        };
        assert!(matches!(
            build(detector(), odd),
            Err(FaceError::ModelLayout { .. })
        ));
    }

    #[test]
    fn fixed_detector_size_wins_over_the_option() {
        let detector = FakeModel {
            dims: vec![Some(1), Some(3), Some(320), Some(320)],
            outputs: scrfd_outputs(320),
            fill: 0.0,
        };
        let analyzer = build(detector, arcface()).expect("valid layout");
        assert_eq!(analyzer.detector_input_size(), (320, 320));
        let dynamic = FakeModel {
            dims: vec![None, Some(3), None, None],
            outputs: scrfd_outputs(640),
            fill: 0.0,
        };
        assert_eq!(
            build(dynamic, arcface())
                .expect("valid")
                .detector_input_size(),
            (640, 640)
        );
    }

    #[test]
    fn no_detection_above_threshold_is_no_face() {
        let detector = FakeModel {
            dims: vec![None, Some(3), None, None],
            outputs: scrfd_outputs(640),
            fill: 0.1,
        };
        let analyzer = build(detector, arcface()).expect("valid layout");
        let image = RgbImage {
            width: 50,
            height: 40,
            pixels: vec![90; 50 * 40 * 3],
        };
        assert!(analyzer.analyze_all(&image).expect("runs").is_empty());
        assert!(matches!(
            analyzer.analyze_largest_decoded(&image),
            Err(FaceError::NoFace)
        ));
        let broken = RgbImage {
            width: 50,
            height: 40,
            pixels: vec![0; 10],
        };
        assert!(matches!(
            analyzer.analyze_all(&broken),
            Err(FaceError::UnreadableImage { .. })
        ));
    }

    #[test]
    fn embedding_is_normalised_and_crops_have_their_sizes() {
        let detector = FakeModel {
            dims: vec![None, Some(3), None, None],
            outputs: scrfd_outputs(640),
            fill: 0.0,
        };
        let analyzer = build(detector, arcface()).expect("valid layout");
        let image = RgbImage {
            width: 200,
            height: 200,
            pixels: vec![128; 200 * 200 * 3],
        };
        let face = DetectedFace {
            bbox: [60.0, 50.0, 140.0, 160.0],
            score: 0.9,
            keypoints: [
                [80.0, 90.0],
                [120.0, 90.0],
                [100.0, 115.0],
                [85.0, 135.0],
                [115.0, 135.0],
            ],
        };
        let analyzed = analyzer.embed(&image, &face).expect("embeds");
        let norm: f32 = analyzed.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
        assert_eq!(
            (analyzed.aligned_112.width, analyzed.aligned_224.width),
            (112, 224)
        );
        // The face lies well inside the photo, so the crop centre is photo grey, not border black.
        let centre = (56 * 112 + 56) * 3;
        assert_eq!(analyzed.aligned_112.pixels[centre], 128);
    }
}
