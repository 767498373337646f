//! The inference engine behind the face models.
//!
//! Engine choice: ONNX Runtime through the `ort` crate (2.0.0-rc.15) with `load-dynamic`.
//! Measured on the buffalo_s pair (2 CPU cores, see `shared/spec/pipeline.md` §9) it is
//! bit-identical to onnxruntime in Python and just as fast (SCRFD-500M 640x640 ~11 ms, ArcFace
//! MobileFaceNet ~9.5 ms), and builds in under a minute with no binary download and no protoc:
//! `libonnxruntime.so` is opened at run time (ORT_DYLIB_PATH, or
//! `FaceAnalyzerOptions::onnxruntime_library`); the PyPI wheel `onnxruntime` ships it in
//! `onnxruntime/capi/`, `onnxruntime-gpu` ships the CUDA build. The alternatives measured worse:
//! tract-onnx 3-5x slower (and a 10 min release build), candle-onnx ~30x slower on SCRFD, needs
//! protoc, and rejects SCRFD's Resize nodes. The models are small next to the UNet, so CPU or a
//! CUDA session beside candle is fine.
//!
//! Everything model-specific goes through [`FaceModelBackend`], so a native candle
//! implementation (weights converted once, running on the generation GPU) can replace ONNX
//! Runtime without touching detection or alignment code.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

use crate::error::FaceError;

/// A dense f32 tensor produced by a model, flattened (its layout is known from the model kind).
#[derive(Clone, Debug)]
pub(crate) struct OutputTensor {
    pub data: Vec<f32>,
}

/// What detection/recognition code needs from a model: its input signature and a forward pass
/// on one NCHW f32 tensor.
pub(crate) trait FaceModelBackend: Send + Sync {
    /// Input dimensions as declared by the model; `None` for a dynamic axis.
    fn input_dims(&self) -> &[Option<usize>];
    /// Number of outputs (SCRFD variants are told apart by it).
    fn output_count(&self) -> usize;
    /// Runs the model on `input` (`shape` = [N, C, H, W]); outputs in declaration order.
    fn run(&self, input: Vec<f32>, shape: [usize; 4]) -> Result<Vec<OutputTensor>, FaceError>;
}

/// How ONNX Runtime sessions are created.
#[derive(Clone, Debug, Default)]
pub(crate) struct OrtSettings {
    pub library: Option<PathBuf>,
    pub intra_threads: Option<usize>,
    pub spinning: bool,
    /// Run on ONNX Runtime's CUDA provider on this device ordinal; `None`: CPU.
    pub cuda_device: Option<usize>,
}

/// The ONNX Runtime library in `folder` (such as an `onnxruntime` wheel's `capi/`): the
/// `libonnxruntime.so*` / `libonnxruntime*.dylib` / `onnxruntime.dll` whose name sorts last,
/// which is the most specific version when several are there.
pub fn onnxruntime_in_folder(folder: &Path) -> Option<PathBuf> {
    let is_runtime = |name: &str| {
        name.starts_with("libonnxruntime.so")
            || (name.starts_with("libonnxruntime") && name.ends_with(".dylib"))
            || name == "onnxruntime.dll"
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(folder)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(is_runtime)
        })
        .collect();
    found.sort();
    found.pop()
}

/// The process-wide ONNX Runtime environment; ONNX Runtime allows one per process.
static ENVIRONMENT: OnceLock<Mutex<Option<ort::environment::Environment>>> = OnceLock::new();

fn environment(settings: &OrtSettings) -> Result<ort::environment::Environment, FaceError> {
    let slot = ENVIRONMENT.get_or_init(|| Mutex::new(None));
    let mut guard = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = guard.as_ref() {
        return Ok(env.clone());
    }
    let library = settings
        .library
        .clone()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .ok_or_else(|| FaceError::RuntimeLoad {
            reason: "ORT_DYLIB_PATH is not set".to_string(),
        })?;
    let library = if library.is_dir() {
        onnxruntime_in_folder(&library).ok_or_else(|| FaceError::RuntimeLoad {
            reason: format!(
                "no libonnxruntime library in the folder {}",
                library.display()
            ),
        })?
    } else {
        library
    };
    if !library.is_file() {
        return Err(FaceError::RuntimeLoad {
            reason: format!("{} does not exist", library.display()),
        });
    }
    disable_telemetry();
    let builder = ort::init_from(&library).map_err(|e| FaceError::RuntimeLoad {
        reason: format!("{}: {e}", library.display()),
    })?;
    let env = builder
        .with_name("headshot-face")
        // The API switch too (see `disable_telemetry`).
        .with_telemetry(false)
        .build()
        .map_err(|e| FaceError::RuntimeLoad {
            reason: format!("{}: {e}", library.display()),
        })?;
    tracing::info!(library = %library.display(), "loaded ONNX Runtime");
    *guard = Some(env.clone());
    Ok(env)
}

/// ONNX Runtime (1.2x+, Linux too) uploads usage telemetry by default, looking up
/// mobile.events.data.microsoft.com; `DisableTelemetryEvents` alone does not stop it, its
/// `ORT_DISABLE_TELEMETRY` variable does. A self-hosted server must not phone home, so the
/// variable is set before the library is loaded, unless the operator set it.
fn disable_telemetry() {
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        // Runs once, under the environment lock, before ONNX Runtime's threads exist.
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
}

/// One ONNX model in an ONNX Runtime session. `Session::run` needs `&mut`, so calls are
/// serialised by a mutex (the analyzer runs on one worker thread anyway).
pub(crate) struct OrtModel {
    name: &'static str,
    session: Mutex<Session>,
    input_dims: Vec<Option<usize>>,
    output_count: usize,
}

impl OrtModel {
    pub(crate) fn load(
        path: &Path,
        name: &'static str,
        settings: &OrtSettings,
    ) -> Result<Self, FaceError> {
        if !path.is_file() {
            return Err(FaceError::ModelLoad {
                path: path.to_path_buf(),
                reason: "the file does not exist".into(),
            });
        }
        let env = environment(settings)?;
        let load_err = |reason: String| FaceError::ModelLoad {
            path: path.to_path_buf(),
            reason,
        };
        let mut builder = Session::builder(&env)
            .map_err(|e| load_err(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| load_err(e.to_string()))?;
        if let Some(threads) = settings.intra_threads {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| load_err(e.to_string()))?;
        }
        // Spinning pool threads keep burning CPU after a run; with two sessions used one after
        // the other (and candle beside them) that slows everything else down.
        builder = builder
            .with_intra_op_spinning(settings.spinning)
            .map_err(|e| load_err(e.to_string()))?;
        if let Some(device) = settings.cuda_device {
            builder = with_cuda(builder, device).map_err(load_err)?;
        }
        let session = builder
            .commit_from_file(path)
            .map_err(|e| load_err(e.to_string()))?;

        let inputs = session.inputs();
        if inputs.len() != 1 {
            return Err(FaceError::ModelLayout {
                path: path.to_path_buf(),
                reason: format!("expected one image input, found {}", inputs.len()),
            });
        }
        let input_dims: Vec<Option<usize>> = inputs[0]
            .dtype()
            .tensor_shape()
            .map(|shape| {
                shape
                    .iter()
                    .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
                    .collect()
            })
            .unwrap_or_default();
        if input_dims.len() != 4 || input_dims[1].is_some_and(|c| c != 3) {
            return Err(FaceError::ModelLayout {
                path: path.to_path_buf(),
                reason: format!("expected an input of shape [N, 3, H, W], found {input_dims:?}"),
            });
        }
        let output_count = session.outputs().len();
        tracing::info!(model = name, path = %path.display(), ?input_dims, output_count, "loaded face model");
        Ok(Self {
            name,
            session: Mutex::new(session),
            input_dims,
            output_count,
        })
    }
}

/// Registers the CUDA provider on `device`. It must take: ONNX Runtime's default would fall back
/// to the CPU silently, and an operator who asked for the GPU should hear that it is not used
/// (a CPU-only libonnxruntime, missing CUDA libraries, a wrong device).
#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    device: usize,
) -> Result<ort::session::builder::SessionBuilder, String> {
    let device_id =
        i32::try_from(device).map_err(|_| format!("CUDA device {device} is out of range"))?;
    builder
        .with_execution_providers([ort::ep::CUDA::default()
            .with_device_id(device_id)
            .build()
            .error_on_failure()])
        .map_err(|e| {
            format!(
                "ONNX Runtime's CUDA provider could not start on cuda:{device} (is the library the \
                 onnxruntime-gpu build, with its CUDA libraries on LD_LIBRARY_PATH?): {e}"
            )
        })
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    device: usize,
) -> Result<ort::session::builder::SessionBuilder, String> {
    Err(format!(
        "face analysis on cuda:{device} was requested but headshot-face was built without its `cuda` feature"
    ))
}

impl FaceModelBackend for OrtModel {
    fn input_dims(&self) -> &[Option<usize>] {
        &self.input_dims
    }

    fn output_count(&self) -> usize {
        self.output_count
    }

    fn run(&self, input: Vec<f32>, shape: [usize; 4]) -> Result<Vec<OutputTensor>, FaceError> {
        let fail = |reason: String| FaceError::Inference {
            model: self.name,
            reason,
        };
        let tensor = Tensor::from_array((shape.map(|d| d as i64).to_vec(), input))
            .map_err(|e| fail(e.to_string()))?;
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let outputs = session
            .run(ort::inputs![tensor])
            .map_err(|e| fail(e.to_string()))?;
        let mut result = Vec::with_capacity(outputs.len());
        for index in 0..outputs.len() {
            let (_shape, data) = outputs[index]
                .try_extract_tensor::<f32>()
                .map_err(|e| fail(e.to_string()))?;
            result.push(OutputTensor {
                data: data.to_vec(),
            });
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_is_found_in_a_folder_and_other_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(onnxruntime_in_folder(dir.path()), None);
        for name in [
            "libonnxruntime.so",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime_providers_shared.so",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("libonnxruntime.so.9")).unwrap();
        assert_eq!(
            onnxruntime_in_folder(dir.path()),
            Some(dir.path().join("libonnxruntime.so.1.32.0"))
        );
        assert_eq!(onnxruntime_in_folder(&dir.path().join("missing")), None);
    }
}
