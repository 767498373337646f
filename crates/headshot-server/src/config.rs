//! Server configuration: every flag also reads an environment variable (`HEADSHOT_*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use headshot_core::wire::limits;
use headshot_pipeline::{DTypeSpec, DeviceSpec};

#[derive(Clone, Debug, Parser)]
#[command(
    name = "headshot-server",
    version,
    about = "Self-hosted, ModelsLab-compatible head shot server (SD1.5 + IP-Adapter FaceID PlusV2 in candle)"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HEADSHOT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Accepted API keys, comma separated (clients send one as `key` in the body or header).
    #[arg(
        long,
        env = "HEADSHOT_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Accept requests without a valid key. Only for closed networks and local experiments.
    #[arg(long, env = "HEADSHOT_NO_AUTH")]
    pub no_auth: bool,

    /// Base URL clients reach this server at; output and fetch URLs are built from it.
    /// Default: http://<bind>.
    #[arg(long, env = "HEADSHOT_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// Log one JSON object per line (with the request id and the other span fields) instead of
    /// human-readable lines.
    #[arg(long, env = "HEADSHOT_JSON_LOGS")]
    pub json_logs: bool,

    /// Browser origins allowed to call the API (comma-separated, e.g. a web app's
    /// `https://app.example.com`; `*` for any). Without it no CORS headers are sent.
    #[arg(
        long = "cors-allow-origin",
        env = "HEADSHOT_CORS_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_allow_origins: Vec<String>,

    /// Folder for generated images (`outputs/`) and the job database (`jobs.redb`).
    #[arg(long, env = "HEADSHOT_DATA_DIR", default_value = "headshot-data")]
    pub data_dir: PathBuf,

    /// Jobs admitted at once (waiting + running); more are refused with the rate-limit error.
    #[arg(long, env = "HEADSHOT_QUEUE_SIZE", default_value_t = 32)]
    pub queue_size: usize,

    /// Threads of the prepare stage (face photo decoding and analysis, on the CPU, before the
    /// device queue); at least one per device. One keeps jobs in admission order; more let a
    /// quick photo pass one that is slow to analyse.
    #[arg(long, env = "HEADSHOT_PREPARE_THREADS", default_value_t = 1)]
    pub prepare_threads: usize,

    /// How long a submit waits for its images before answering `processing` (seconds).
    #[arg(long, env = "HEADSHOT_SYNC_WAIT_SECS", default_value_t = 30.0)]
    pub sync_wait_secs: f64,

    /// How long output files are served (seconds); the hosted service keeps them 24 h.
    #[arg(long, env = "HEADSHOT_OUTPUT_TTL_SECS", default_value_t = 24 * 60 * 60)]
    pub output_ttl_secs: u64,

    /// How long finished job records answer `fetch` (seconds); at least the output TTL.
    #[arg(long, env = "HEADSHOT_RECORD_TTL_SECS", default_value_t = 7 * 24 * 60 * 60)]
    pub record_ttl_secs: u64,

    /// Allow face image URLs and webhooks that point at loopback, private, link-local and
    /// other non-public addresses. Off by default: it would let clients probe your network.
    #[arg(long, env = "HEADSHOT_ALLOW_PRIVATE_URLS")]
    pub allow_private_urls: bool,

    /// Largest accepted face image (bytes, after base64 decoding or download).
    #[arg(long, env = "HEADSHOT_MAX_IMAGE_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_image_bytes: usize,

    /// Largest accepted face image in pixels (width x height), checked before decoding.
    #[arg(long, env = "HEADSHOT_MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    pub max_image_pixels: u64,

    /// Time limit for downloading a face image, redirects included (seconds).
    #[arg(long, env = "HEADSHOT_FETCH_TIMEOUT_SECS", default_value_t = 20)]
    pub fetch_timeout_secs: u64,

    /// Redirects followed when downloading a face image (each hop is checked again).
    #[arg(long, env = "HEADSHOT_MAX_REDIRECTS", default_value_t = 5)]
    pub max_redirects: usize,

    /// Webhook delivery attempts after the first one fails.
    #[arg(long, env = "HEADSHOT_WEBHOOK_RETRIES", default_value_t = 5)]
    pub webhook_retries: usize,

    /// First retry delay for webhooks (milliseconds); doubles on each retry.
    #[arg(long, env = "HEADSHOT_WEBHOOK_BACKOFF_MS", default_value_t = 1000)]
    pub webhook_backoff_ms: u64,

    /// Signs webhooks as Standard Webhooks (`webhook-signature` = v1,base64 HMAC-SHA256 of
    /// "{webhook-id}.{webhook-timestamp}.{body}"): `whsec_` followed by a base64 key. Unset:
    /// webhooks carry `webhook-id` and `webhook-timestamp` but no signature.
    #[arg(long, env = "HEADSHOT_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<crate::webhooks::WebhookSecret>,

    /// Seconds one job is expected to take before any has finished (for `eta`).
    #[arg(long, env = "HEADSHOT_INITIAL_ETA_SECS", default_value_t = 10.0)]
    pub initial_eta_secs: f64,

    /// Time a client has to send a request's headers (seconds); then the connection is closed.
    #[arg(long, env = "HEADSHOT_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// Time a client has to send a request body once its headers are in (seconds); then the
    /// request is answered 408.
    #[arg(long, env = "HEADSHOT_BODY_READ_TIMEOUT_SECS", default_value_t = 120)]
    pub body_read_timeout_secs: u64,

    /// Client connections open at once; further ones wait in the listen backlog.
    #[arg(long, env = "HEADSHOT_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,

    /// Bytes of request bodies read into memory at once, over all requests; further bodies
    /// wait their turn (within the body read timeout). At least one largest body.
    #[arg(long, env = "HEADSHOT_MAX_BODY_BYTES_IN_FLIGHT", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes_in_flight: usize,

    /// Longest `prompt` and `negative_prompt` (characters).
    #[arg(long, env = "HEADSHOT_MAX_PROMPT_CHARS", default_value_t = limits::DEFAULT_MAX_PROMPT_CHARS)]
    pub max_prompt_chars: usize,

    /// Longest `face_image` URL and `webhook` URL (characters).
    #[arg(long, env = "HEADSHOT_MAX_URL_CHARS", default_value_t = limits::DEFAULT_MAX_URL_CHARS)]
    pub max_url_chars: usize,

    /// Largest `track_id` (bytes of its JSON text; it is echoed exactly).
    #[arg(long, env = "HEADSHOT_MAX_TRACK_ID_BYTES", default_value_t = limits::DEFAULT_MAX_TRACK_ID_BYTES)]
    pub max_track_id_bytes: usize,

    /// Allow `user:password@` in face image and webhook URLs (sent as HTTP Basic auth). Off by
    /// default: credentials in a client's URL would be handed to whatever host it names.
    #[arg(long, env = "HEADSHOT_ALLOW_URL_CREDENTIALS")]
    pub allow_url_credentials: bool,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub outputs: crate::output_store::OutputStoreArgs,

    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,
}

/// What the pipeline loads and where it runs; passed through to `headshot-pipeline`.
#[derive(Clone, Debug, clap::Args)]
pub struct ModelArgs {
    /// Model set manifest (models/*.toml): SD1.5 folders, VAE, image encoder, IP-Adapter,
    /// safety checker and face models. `models/tiny.toml` is the small bundled set. A
    /// single-file SD1.5 checkpoint (`.safetensors` / `.ckpt`, LDM layout) is also accepted:
    /// its UNet, VAE and text encoder, with the rest of the default set.
    #[arg(
        long,
        env = "HEADSHOT_MODELS",
        default_value = "models/sd15-faceid-plusv2.toml"
    )]
    pub models: PathBuf,

    /// Devices for the diffusion models: cpu, cuda, cuda:N or metal; several, comma separated
    /// (`cuda:0,cuda:1`), load the model set once per device, each with its own device thread,
    /// and batches are spread over them.
    #[arg(
        long,
        env = "HEADSHOT_DEVICE",
        value_delimiter = ',',
        default_value = "cpu"
    )]
    pub device: Vec<DeviceSpec>,

    /// Weight dtype: f32, f16 or bf16 (f16 is the usual choice on GPUs).
    #[arg(long, env = "HEADSHOT_DTYPE", default_value = "f32")]
    pub dtype: DTypeSpec,

    /// Where the face models (SCRFD, ArcFace) run: cpu, or cuda:N with the onnxruntime-gpu
    /// library (`--onnxruntime-library`) and a build with the `cuda` feature. With several
    /// `--device`s, `cuda` alone means each device's own GPU.
    #[arg(long, env = "HEADSHOT_FACE_DEVICE", default_value = "cpu")]
    pub face_device: FaceDevice,

    /// The ONNX Runtime library (libonnxruntime.so, or a folder holding it such as the
    /// onnxruntime wheel's capi/) for the face models; default: ORT_DYLIB_PATH.
    #[arg(long, env = "HEADSHOT_ONNXRUNTIME_LIBRARY")]
    pub onnxruntime_library: Option<PathBuf>,

    /// Do not load the safety checker (requests with safety_checker=true then fail).
    #[arg(long, env = "HEADSHOT_NO_SAFETY_CHECKER")]
    pub no_safety_checker: bool,

    /// Folder of users' LoRAs (kohya / A1111 `.safetensors`): a request's `lora_model: "name"`
    /// is `name.safetensors` there, listed once at start-up. Without it, requests naming a
    /// LoRA are refused.
    #[arg(long, env = "HEADSHOT_LORA_DIR")]
    pub lora_dir: Option<PathBuf>,

    /// Other base models a request picks by `model_id`, as `id=path` (comma separated or the
    /// flag repeated): a single-file SD1.5 checkpoint (`.safetensors` / `.ckpt`, with --models'
    /// other parts) or a manifest naming the same face models, image encoder, IP-Adapter and
    /// safety checker as --models (those are loaded once, for all). Each loads when a request
    /// first names it. The --models set answers to its manifest's name, or to no model_id.
    /// API nodes and workers of one queue list the same sets.
    #[arg(long = "model-set", env = "HEADSHOT_MODEL_SETS", value_delimiter = ',')]
    pub model_sets: Vec<ModelSetArg>,

    /// Memory (MiB, per device) the --model-set sets may hold at once; the least recently
    /// used is unloaded to make room for another. Default: one at a time. The --models set
    /// stays loaded outside this.
    #[arg(long, env = "HEADSHOT_MODEL_SET_MEMORY_MIB")]
    pub model_set_memory_mib: Option<u64>,
}

/// One `--model-set id=path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSetArg {
    /// The `model_id` requests name it by.
    pub id: String,
    pub path: PathBuf,
}

impl std::str::FromStr for ModelSetArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((id, path)) = s.split_once('=') else {
            return Err(format!(
                "\"{s}\" is not id=path (e.g. realistic=/models/realistic-vision.safetensors)"
            ));
        };
        let (id, path) = (id.trim(), path.trim());
        if !headshot_core::wire::is_model_name(id) {
            return Err(format!(
                "the model set id \"{id}\" is not a name requests can send as model_id (letters, digits, '.', '_', '-')"
            ));
        }
        if path.is_empty() {
            return Err(format!("the model set {id} names no path"));
        }
        Ok(ModelSetArg {
            id: id.to_string(),
            path: PathBuf::from(path),
        })
    }
}

impl ModelArgs {
    /// The `--model-set`s for the pipeline, with their memory allowance.
    pub fn on_demand(&self) -> (Vec<headshot_pipeline::OnDemandSet>, Option<u64>) {
        let sets = self
            .model_sets
            .iter()
            .map(|arg| headshot_pipeline::OnDemandSet {
                id: arg.id.clone(),
                models: headshot_pipeline::ModelSet::Manifest(arg.path.clone()),
            })
            .collect();
        let memory = self
            .model_set_memory_mib
            .map(|mib| mib.saturating_mul(1 << 20));
        (sets, memory)
    }

    /// The LoRA folder listed, if `--lora-dir` is set.
    pub fn lora_folder(
        &self,
    ) -> Result<Option<headshot_pipeline::LoraFolder>, headshot_pipeline::LoraFolderError> {
        self.lora_dir
            .as_ref()
            .map(headshot_pipeline::LoraFolder::scan)
            .transpose()
    }
}

impl ModelArgs {
    /// Each device thread's diffusion device and the CUDA ordinal of its face models (`None`:
    /// CPU), in `--device` order; refuses a device listed twice or a `--face-device` that
    /// cannot follow the devices.
    pub fn placements(&self) -> Result<Vec<(DeviceSpec, Option<usize>)>, String> {
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = self.device.iter().find(|d| !seen.insert(**d)) {
            return Err(format!(
                "--device names {twice} twice; list each device once"
            ));
        }
        self.device
            .iter()
            .map(|&device| Ok((device, self.face_device.cuda_ordinal(device)?)))
            .collect()
    }
}

/// Where face analysis runs (`--face-device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaceDevice {
    Cpu,
    /// This CUDA ordinal for every device thread.
    Cuda(usize),
    /// `cuda` without an ordinal: the GPU of the device thread the analyzer belongs to.
    SameGpu,
}

impl FaceDevice {
    /// The ONNX Runtime CUDA ordinal for the pipeline loaded on `device`.
    pub fn cuda_ordinal(self, device: DeviceSpec) -> Result<Option<usize>, String> {
        match (self, device) {
            (FaceDevice::Cpu, _) => Ok(None),
            (FaceDevice::Cuda(ordinal), _) => Ok(Some(ordinal)),
            (FaceDevice::SameGpu, DeviceSpec::Cuda(ordinal)) => Ok(Some(ordinal)),
            (FaceDevice::SameGpu, other) => Err(format!(
                "--face-device cuda needs CUDA --device(s) to follow, but one device is {other}; \
                 name the GPU (cuda:N) or use cpu"
            )),
        }
    }
}

impl std::str::FromStr for FaceDevice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(FaceDevice::Cpu),
            "cuda" | "gpu" => Ok(FaceDevice::SameGpu),
            other => match other.parse::<DeviceSpec>() {
                Ok(DeviceSpec::Cuda(ordinal)) => Ok(FaceDevice::Cuda(ordinal)),
                _ => Err(format!(
                    "unknown face device \"{s}\"; face analysis runs on cpu, cuda or cuda:N"
                )),
            },
        }
    }
}

impl Config {
    pub fn sync_wait(&self) -> Duration {
        Duration::from_secs_f64(self.sync_wait_secs.max(0.0))
    }

    pub fn output_ttl(&self) -> Duration {
        Duration::from_secs(self.output_ttl_secs)
    }

    pub fn record_ttl(&self) -> Duration {
        Duration::from_secs(self.record_ttl_secs.max(self.output_ttl_secs))
    }

    pub fn text_limits(&self) -> limits::TextLimits {
        limits::TextLimits {
            max_prompt_chars: self.max_prompt_chars,
            max_url_chars: self.max_url_chars,
            max_track_id_bytes: self.max_track_id_bytes,
        }
    }

    pub fn public_base_url(&self) -> String {
        self.public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind))
            .trim_end_matches('/')
            .to_string()
    }

    /// Why clients could not follow the output and fetch URLs, when they could not: without
    /// `--public-base-url` a wildcard bind (0.0.0.0, [::]) would become the URLs' host.
    pub fn unreachable_public_base_url(&self) -> Option<String> {
        (self.public_base_url.is_none() && self.bind.ip().is_unspecified()).then(|| {
            format!(
                "output and fetch_result URLs will start with {}, which clients cannot reach; \
                 set --public-base-url (HEADSHOT_PUBLIC_BASE_URL) to the address they use",
                self.public_base_url()
            )
        })
    }

    /// A configuration for tests and embedding: defaults, given keys, no model flags.
    pub fn for_tests(data_dir: PathBuf, api_keys: &[&str]) -> Self {
        let mut args = vec!["headshot-server".to_string()];
        if !api_keys.is_empty() {
            args.push(format!("--api-keys={}", api_keys.join(",")));
        }
        args.push(format!("--data-dir={}", data_dir.display()));
        let mut config = Config::parse_from(args);
        config.sync_wait_secs = 10.0;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut argv = vec!["headshot-server", "--api-keys=k"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv)
    }

    #[test]
    fn the_default_build_can_fetch_the_default_model_set() {
        // The default manifest names hub repos; a build without `download` would stop at
        // start-up on a fresh machine, so the feature is on by default.
        let models = parse(&[]).unwrap().model.models;
        assert_eq!(models, PathBuf::from("models/sd15-faceid-plusv2.toml"));
        let can_download = cfg!(feature = "download");
        assert!(
            can_download,
            "headshot-server's default features must include `download`"
        );
    }

    #[test]
    fn a_wildcard_bind_without_a_public_base_url_is_named() {
        let why = parse(&["--bind", "0.0.0.0:8080"])
            .unwrap()
            .unreachable_public_base_url()
            .unwrap();
        assert!(why.contains("http://0.0.0.0:8080") && why.contains("--public-base-url"));
        assert!(parse(&["--bind", "[::]:8080"])
            .unwrap()
            .unreachable_public_base_url()
            .is_some());
        let named = [
            "--bind",
            "0.0.0.0:8080",
            "--public-base-url",
            "https://h.example",
        ];
        assert_eq!(parse(&named).unwrap().unreachable_public_base_url(), None);
        assert_eq!(parse(&[]).unwrap().unreachable_public_base_url(), None);
    }

    #[test]
    fn devices_are_a_typed_list() {
        let config = parse(&["--device", "cuda:0,cuda:1", "--dtype", "f16"]).unwrap();
        assert_eq!(
            config.model.device,
            vec![DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)]
        );
        assert_eq!(config.model.dtype, DTypeSpec::F16);
        assert_eq!(parse(&[]).unwrap().model.device, vec![DeviceSpec::Cpu]);
        // Refused while parsing, before any model is loaded.
        assert!(parse(&["--device", "cuda:x"]).is_err());
        assert!(parse(&["--dtype", "f8"]).is_err());
    }

    #[test]
    fn model_sets_are_id_path_pairs() {
        let config = parse(&[
            "--model-set",
            "realistic=/m/rv.safetensors,dream=/m/dream.toml",
            "--model-set-memory-mib",
            "4096",
        ])
        .unwrap();
        let ids: Vec<&str> = config
            .model
            .model_sets
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(ids, ["realistic", "dream"]);
        assert_eq!(
            config.model.model_sets[0].path,
            PathBuf::from("/m/rv.safetensors")
        );
        let (sets, memory) = config.model.on_demand();
        assert_eq!(sets.len(), 2);
        assert_eq!(memory, Some(4096 << 20));
        assert!(parse(&[]).unwrap().model.model_sets.is_empty());
        // Refused while parsing: no `=`, an id no request can spell, no path.
        for bad in ["realistic", "real istic=/m/a.ckpt", "a="] {
            assert!(parse(&["--model-set", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn face_device_follows_or_names_a_gpu() {
        let face = |s: &str| s.parse::<FaceDevice>();
        assert_eq!(face("cpu"), Ok(FaceDevice::Cpu));
        assert_eq!(face("cuda"), Ok(FaceDevice::SameGpu));
        assert_eq!(face("cuda:1"), Ok(FaceDevice::Cuda(1)));
        assert!(face("metal").is_err());
        let gpu1 = DeviceSpec::Cuda(1);
        assert_eq!(FaceDevice::Cpu.cuda_ordinal(gpu1), Ok(None));
        assert_eq!(FaceDevice::SameGpu.cuda_ordinal(gpu1), Ok(Some(1)));
        assert_eq!(FaceDevice::Cuda(0).cuda_ordinal(gpu1), Ok(Some(0)));
        assert!(FaceDevice::SameGpu.cuda_ordinal(DeviceSpec::Cpu).is_err());
        let config = parse(&["--face-device", "cuda"]).unwrap();
        assert_eq!(config.model.face_device, FaceDevice::SameGpu);
    }

    #[test]
    fn placements_are_settled_before_loading() {
        let placements = |args: &[&str]| parse(args).unwrap().model.placements();
        assert_eq!(
            placements(&["--device", "cuda:0,cuda:1", "--face-device", "cuda"]),
            Ok(vec![
                (DeviceSpec::Cuda(0), Some(0)),
                (DeviceSpec::Cuda(1), Some(1))
            ])
        );
        assert_eq!(
            placements(&["--device", "cuda:1"]),
            Ok(vec![(DeviceSpec::Cuda(1), None)])
        );
        let twice = placements(&["--device", "cuda:0,cuda:0"]).unwrap_err();
        assert!(twice.contains("cuda:0 twice"), "{twice}");
        // The second device cannot host the face models: refused before anything loads.
        assert!(placements(&["--device", "cuda:0,cpu", "--face-device", "cuda"]).is_err());
    }
}
