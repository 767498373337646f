//! What `Pipeline::load` needs: the model set, where to run, in which precision, and limits.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use candle_core::{DType, Device};
use headshot_weights::{ResolveOptions, ResolvedModelSet};

use crate::error::PipelineError;

/// Which model set to load.
#[derive(Clone, Debug)]
pub enum ModelSet {
    /// A `models/*.toml` manifest, resolved at load time with `PipelineConfig::resolve`.
    Manifest(PathBuf),
    /// An already resolved set (e.g. after `headshot fetch-models`).
    Resolved(ResolvedModelSet),
}

impl ModelSet {
    /// The set's name: its manifest's `name` (a checkpoint path: the file's stem), read
    /// without resolving any file.
    pub fn name(&self) -> Result<String, PipelineError> {
        match self {
            ModelSet::Resolved(set) => Ok(set.name.clone()),
            ModelSet::Manifest(path) => Ok(headshot_weights::Manifest::from_file(path)?.name),
        }
    }
}

/// A model set a job picks by its `model_id`, loaded when first needed (see
/// `PipelineConfig::on_demand`).
#[derive(Clone, Debug)]
pub struct OnDemandSet {
    /// The `model_id` that names it.
    pub id: String,
    /// A manifest, a single-file checkpoint (`.safetensors` / `.ckpt`, completed with the
    /// default set's other parts), or a set already resolved.
    pub models: ModelSet,
}

/// Where the models run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// CUDA device ordinal (build with the `cuda` feature).
    Cuda(usize),
    /// Metal device ordinal (build with the `metal` feature).
    Metal(usize),
}

impl DeviceSpec {
    pub fn open(self) -> Result<Device, PipelineError> {
        let device = match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(i) => Device::new_cuda(i),
            DeviceSpec::Metal(i) => Device::new_metal(i),
        };
        let device = device.map_err(|e| PipelineError::Device {
            device: self.to_string(),
            message: format!(
                "{e}; is this binary built with the matching feature (`cuda` / `metal`) and is the device present?"
            ),
        })?;
        #[cfg(feature = "cuda")]
        if let DeviceSpec::Cuda(ordinal) = self {
            crate::compute_cap::check_device(&device, ordinal).map_err(|message| {
                PipelineError::Device {
                    device: self.to_string(),
                    message,
                }
            })?;
        }
        Ok(device)
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Metal(i) => write!(f, "metal:{i}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;
    /// `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let (kind, index) = match s.split_once(':') {
            Some((kind, index)) => {
                let index = index.parse::<usize>().map_err(|_| {
                    format!("device index in \"{s}\" is not a number; use e.g. cuda:0")
                })?;
                (kind.to_string(), index)
            }
            None => (s.clone(), 0),
        };
        match kind.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(index)),
            "metal" | "mps" => Ok(DeviceSpec::Metal(index)),
            _ => Err(format!(
                "unknown device \"{s}\"; use cpu, cuda, cuda:N, metal or metal:N"
            )),
        }
    }
}

/// Precision of the models. f32 is the reference; f16/bf16 are for GPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DTypeSpec {
    #[default]
    F32,
    F16,
    BF16,
}

impl DTypeSpec {
    pub fn dtype(self) -> DType {
        match self {
            DTypeSpec::F32 => DType::F32,
            DTypeSpec::F16 => DType::F16,
            DTypeSpec::BF16 => DType::BF16,
        }
    }
}

impl fmt::Display for DTypeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DTypeSpec::F32 => "f32",
            DTypeSpec::F16 => "f16",
            DTypeSpec::BF16 => "bf16",
        })
    }
}

impl FromStr for DTypeSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(DTypeSpec::F32),
            "f16" | "float16" | "fp16" | "half" => Ok(DTypeSpec::F16),
            "bf16" | "bfloat16" => Ok(DTypeSpec::BF16),
            other => Err(format!("unknown dtype \"{other}\"; use f32, f16 or bf16")),
        }
    }
}

/// Bounds on what one call may ask for; jobs beyond them get `InvalidInput`.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Images (samples summed over jobs) in one UNet batch; CFG doubles the UNet batch on top.
    pub max_batch_images: usize,
    pub max_width: u32,
    pub max_height: u32,
    pub max_steps: u32,
    pub max_samples: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_images: 4,
            max_width: 1024,
            max_height: 1024,
            max_steps: 100,
            max_samples: 4,
        }
    }
}

/// Everything `Pipeline::load` needs.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub models: ModelSet,
    /// How a manifest is resolved (cache folder, downloads allowed, progress bar).
    pub resolve: ResolveOptions,
    pub device: DeviceSpec,
    pub dtype: DTypeSpec,
    /// Weight of the id-token attention in the UNet (diffusers' `set_ip_adapter_scale`), 1.0 in
    /// the reference. Not the request's `s_scale`.
    pub adapter_scale: f64,
    pub limits: Limits,
    /// Load the safety checker (when the manifest has one). Without it, jobs that ask for the
    /// checker fail with `InvalidInput`.
    pub load_safety_checker: bool,
    /// Load the ONNX face models. Without them only the `*_with_face` APIs work.
    pub load_face_analyzer: bool,
    /// Options of the face analyzer (ONNX Runtime library, threads, thresholds, decode limits).
    pub face_options: headshot_face::FaceAnalyzerOptions,
    /// Users' LoRAs, named by a job's `lora_model` (`None`: jobs naming a LoRA are refused).
    pub lora_folder: Option<crate::LoraFolder>,
    /// Other base models, picked by a job's `model_id`; they share the default set's face
    /// models, image encoder, IP-Adapter and safety checker, and load when a job first names
    /// them.
    pub on_demand: Vec<OnDemandSet>,
    /// Bytes of device memory the on-demand sets may hold at once (least recently used
    /// unloaded first); `None`: one at a time. The default set stays loaded outside it.
    pub on_demand_memory: Option<u64>,
}

impl PipelineConfig {
    /// CPU, f32, adapter scale 1.0, default limits, everything loaded, resolution from the
    /// environment (HF cache, downloads unless `HF_HUB_OFFLINE=1`).
    pub fn new(manifest: impl Into<PathBuf>) -> PipelineConfig {
        PipelineConfig {
            models: ModelSet::Manifest(manifest.into()),
            resolve: ResolveOptions::default(),
            device: DeviceSpec::Cpu,
            dtype: DTypeSpec::F32,
            adapter_scale: 1.0,
            limits: Limits::default(),
            load_safety_checker: true,
            load_face_analyzer: true,
            face_options: headshot_face::FaceAnalyzerOptions::default(),
            lora_folder: None,
            on_demand: Vec::new(),
            on_demand_memory: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_dtypes() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("CUDA:2".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(2)));
        assert_eq!("metal:1".parse::<DeviceSpec>(), Ok(DeviceSpec::Metal(1)));
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        assert_eq!("fp16".parse::<DTypeSpec>(), Ok(DTypeSpec::F16));
        assert_eq!(
            "bf16".parse::<DTypeSpec>().map(|d| d.dtype()),
            Ok(DType::BF16)
        );
        assert!("int8".parse::<DTypeSpec>().is_err());
    }
}
