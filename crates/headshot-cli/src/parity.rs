//! `headshot parity`: the committed end-to-end goldens (diffusers, f32, CPU) re-run on a chosen
//! device and dtype, one JSON line per case and dtype on stdout. The GPU kit's parity check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use headshot_core::{JobSettings, PreparedFace};
use headshot_pipeline::{DTypeSpec, DeviceSpec, Pipeline, PipelineConfig, RenderOptions};

#[derive(Args)]
pub struct ParityArgs {
    /// The model set the goldens were made from (models/tiny.toml).
    #[arg(long, env = "HEADSHOT_MODELS")]
    pub models: PathBuf,
    /// Folder of the goldens (tests/fixtures/goldens): e2e_*.safetensors and face_224.png.
    #[arg(long)]
    pub goldens: PathBuf,
    /// Golden names (e.g. e2e_s1_g7.5_512x512_n1_neg_21); default: every e2e_* in --goldens.
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
    /// cpu, cuda, cuda:N, metal.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Precisions to run, each with the pipeline loaded afresh.
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    pub dtypes: Vec<DTypeSpec>,
}

/// One e2e golden: its tensors (f32, CPU) and settings.
struct Golden {
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

impl Golden {
    fn read(path: &Path) -> Result<Golden> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .with_context(|| format!("{}: safetensors header", path.display()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    k,
                    if v.dtype().is_float() {
                        v.to_dtype(DType::F32)?
                    } else {
                        v
                    },
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Golden { tensors, meta })
    }

    fn tensor(&self, key: &str) -> Result<&Tensor> {
        self.tensors
            .get(key)
            .with_context(|| format!("golden has no tensor {key}"))
    }

    fn meta<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let text = self
            .meta
            .get(key)
            .with_context(|| format!("golden has no metadata {key}"))?;
        text.parse()
            .ok()
            .with_context(|| format!("golden metadata {key} = {text:?}"))
    }

    fn job(&self) -> Result<JobSettings> {
        Ok(JobSettings {
            prompt: self.meta("prompt")?,
            negative_prompt: self.meta("negative_prompt")?,
            width: self.meta("width")?,
            height: self.meta("height")?,
            num_inference_steps: self.meta("num_inference_steps")?,
            guidance_scale: self.meta("guidance_scale")?,
            s_scale: self.meta("s_scale")?,
            samples: self.meta("samples")?,
            seed: 0,
            safety_checker: None,
            face_index: 0,
            candidates: 0,
            model: Default::default(),
        })
    }

    /// A traced render from the golden's initial latents.
    fn options(&self) -> Result<RenderOptions> {
        Ok(RenderOptions::traced().with_initial_latents(vec![self.tensor("latents")?.clone()]))
    }
}

fn max_and_mean_abs(a: &Tensor, b: &Tensor) -> Result<(f32, f32)> {
    if a.dims() != b.dims() {
        bail!("shapes differ: {:?} vs {:?}", a.dims(), b.dims());
    }
    let d = (a.to_dtype(DType::F32)? - b)?.abs()?.flatten_all()?;
    Ok((
        d.max(0)?.to_scalar::<f32>()?,
        d.mean(0)?.to_scalar::<f32>()?,
    ))
}

fn cases(args: &ParityArgs) -> Result<Vec<String>> {
    if !args.cases.is_empty() {
        return Ok(args.cases.clone());
    }
    let mut names: Vec<String> = std::fs::read_dir(&args.goldens)
        .with_context(|| format!("listing {}", args.goldens.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("e2e_") && n.ends_with(".safetensors"))
        .map(|n| n.trim_end_matches(".safetensors").to_string())
        .collect();
    names.sort();
    Ok(names)
}

pub fn run(args: ParityArgs) -> Result<()> {
    let crop = crate::read_image(&args.goldens.join("face_224.png"))?;
    let cases = cases(&args)?;
    for &dtype in &args.dtypes {
        let mut config = PipelineConfig::new(&args.models);
        config.device = args.device;
        config.dtype = dtype;
        config.load_face_analyzer = false;
        config.load_safety_checker = false;
        config.resolve.allow_download = false;
        config.resolve.progress = false;
        config.limits.max_batch_images = 8;
        let pipeline = Pipeline::load(&config)?;
        for case in &cases {
            let golden = Golden::read(&args.goldens.join(format!("{case}.safetensors")))?;
            let face = PreparedFace {
                id_embedding: golden
                    .tensor("id_embeds")?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
                aligned_224: crop.clone(),
                faces_found: 1,
                more_aligned_224: Vec::new(),
            };
            let started = Instant::now();
            let out = pipeline.render(&golden.job()?, &face, &golden.options()?)?;
            let seconds = started.elapsed().as_secs_f64();
            let trace = out.trace.context("a traced render")?;
            let (image_max, image_mean) = max_and_mean_abs(&trace.image, golden.tensor("image")?)?;
            let (latents_max, _) =
                max_and_mean_abs(&trace.final_latents, golden.tensor("final_latents")?)?;
            println!(
                "{}",
                serde_json::json!({
                    "kind": "parity",
                    "case": case,
                    "device": args.device.to_string(),
                    "dtype": dtype.to_string(),
                    "image_max_abs": image_max,
                    "image_mean_abs": image_mean,
                    "final_latents_max_abs": latents_max,
                    "finite": image_max.is_finite() && latents_max.is_finite(),
                    "seconds": seconds,
                })
            );
        }
    }
    Ok(())
}
