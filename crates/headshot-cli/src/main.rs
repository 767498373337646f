//! `headshot`: generate head shots from the command line, and pre-fetch model sets.
//!
//! ```text
//! headshot generate --models models/tiny.toml --face photo.jpg --prompt "pretty woman" --out out/
//! headshot generate --models models/tiny.toml --face-embedding emb.safetensors --face-crop crop.png \
//!     --prompt "pretty woman" --latents latents.safetensors --out out/
//! headshot fetch-models --models models/sd15-faceid-plusv2.toml
//! headshot random-models --size full --seed 0 --face-models target/test-assets --out /tmp/random-full
//! headshot parity --models models/tiny.toml --goldens tests/fixtures/goldens --device cuda:0 --dtypes f32,f16
//! headshot bench --models /tmp/random-full/models.toml --device cuda:0 --dtype f16
//! ```

mod bench;
mod parity;
mod random_models;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Parser, Subcommand};
use headshot_core::{CensorType, JobSettings, PreparedFace, RgbImage};
use headshot_pipeline::{
    DTypeSpec, DeviceSpec, Pipeline, PipelineConfig, RenderOptions, RenderTrace,
};
use headshot_weights::{Manifest, ResolveOptions};

#[derive(Parser)]
#[command(
    name = "headshot",
    version,
    about = "Head shot generation with SD1.5 + IP-Adapter FaceID PlusV2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images for one face and prompt, written as PNG files.
    Generate(GenerateArgs),
    /// Download every file of a model set into the Hugging Face cache (with progress).
    FetchModels(FetchArgs),
    /// Write a model set with random weights in the real formats and shapes (no download).
    RandomModels(random_models::RandomModelsArgs),
    /// Re-run the committed end-to-end goldens on a device and dtype; one JSON line per case.
    Parity(parity::ParityArgs),
    /// Time whole jobs, the VAE decode and concurrent batches; one JSON line per measurement.
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct GenerateArgs {
    /// Model set manifest (models/*.toml), or a single-file SD1.5 checkpoint (.safetensors /
    /// .ckpt) completed by the default set.
    #[arg(long, env = "HEADSHOT_MODELS")]
    models: PathBuf,
    /// Face photo (JPEG, PNG, WebP, ...); the largest face is used.
    #[arg(long, conflicts_with_all = ["face_embedding", "face_crop"], required_unless_present = "face_embedding")]
    face: Option<PathBuf>,
    /// ArcFace embedding (safetensors, one tensor of 512 values, e.g. named `embedding`), instead of a photo.
    #[arg(long, requires = "face_crop")]
    face_embedding: Option<PathBuf>,
    /// The face aligned at 224x224 (image file), with --face-embedding.
    #[arg(long, requires = "face_embedding")]
    face_crop: Option<PathBuf>,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    #[arg(long, default_value_t = 512)]
    width: u32,
    #[arg(long, default_value_t = 512)]
    height: u32,
    #[arg(long, default_value_t = 21)]
    steps: u32,
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// FaceID PlusV2 shortcut scale ("weight of the face structure"), 0..=2.
    #[arg(long, default_value_t = 1.0)]
    s_scale: f64,
    #[arg(long, default_value_t = 1)]
    samples: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Initial latents (safetensors, tensor `latents` or the only tensor, [samples, 4, H/8, W/8])
    /// instead of seeded noise.
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Debugging: also write the intermediate values (text embeddings, id tokens, latents at
    /// the start, after step 0 and at the end, the float image) to this safetensors file, in
    /// diffusers' layouts, for comparing with a diffusers run.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Run the safety checker and censor flagged images: black, blur, pixelate, sensitive_content_text.
    #[arg(long)]
    safety_checker: Option<CensorType>,
    /// cpu, cuda, cuda:N, metal, metal:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// f32, f16, bf16.
    #[arg(long, default_value = "f32")]
    dtype: DTypeSpec,
    /// Adapter weight on the id tokens (diffusers' ip_adapter scale).
    #[arg(long, default_value_t = 1.0)]
    adapter_scale: f64,
    /// libonnxruntime.so, or a folder holding it, for the face models (default: the
    /// ORT_DYLIB_PATH environment variable).
    #[arg(long)]
    onnxruntime_library: Option<PathBuf>,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct FetchArgs {
    /// Model set manifest (models/*.toml), or a single-file SD1.5 checkpoint (.safetensors /
    /// .ckpt) completed by the default set.
    #[arg(long, env = "HEADSHOT_MODELS")]
    models: PathBuf,
    /// Skip the ONNX face models.
    #[arg(long)]
    skip_face_models: bool,
    /// Skip the safety checker.
    #[arg(long)]
    skip_safety_checker: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Generate(args) => generate(args),
        Command::FetchModels(args) => fetch_models(args),
        Command::RandomModels(args) => random_models::run(args),
        Command::Parity(args) => parity::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

fn fetch_models(args: FetchArgs) -> Result<()> {
    let manifest = Manifest::from_file(&args.models)?;
    let mut options = ResolveOptions::default();
    options.only = Some(
        manifest
            .components
            .keys()
            .copied()
            .filter(|k| {
                !(k.is_face_model() && args.skip_face_models)
                    && !(k.is_safety_model() && args.skip_safety_checker)
            })
            .collect(),
    );
    let set = headshot_weights::resolve(&manifest, &options)?;
    for component in set.components.values() {
        for file in &component.files {
            println!(
                "{:<18} {:<10} {}",
                component.kind.to_string(),
                format!("{:?}", file.origin),
                file.path.display()
            );
        }
    }
    eprintln!(
        "model set {} is complete ({} components)",
        set.name,
        set.components.len()
    );
    Ok(())
}

fn generate(args: GenerateArgs) -> Result<()> {
    let mut config = PipelineConfig::new(&args.models);
    config.device = args.device;
    config.dtype = args.dtype;
    config.adapter_scale = args.adapter_scale;
    config.load_face_analyzer = args.face.is_some();
    config.load_safety_checker = args.safety_checker.is_some();
    if args.onnxruntime_library.is_some() {
        config.face_options.onnxruntime_library = args.onnxruntime_library.clone();
    }
    config.limits.max_samples = config.limits.max_samples.max(args.samples);
    config.limits.max_batch_images = config.limits.max_batch_images.max(args.samples as usize);
    config.limits.max_width = config.limits.max_width.max(args.width);
    config.limits.max_height = config.limits.max_height.max(args.height);
    config.limits.max_steps = config.limits.max_steps.max(args.steps);
    let pipeline = Pipeline::load(&config)?;

    let face = match (&args.face, &args.face_embedding, &args.face_crop) {
        (Some(photo), _, _) => {
            let bytes = std::fs::read(photo)
                .with_context(|| format!("reading the face photo {}", photo.display()))?;
            pipeline.analyze_face(&bytes)?
        }
        (None, Some(embedding), Some(crop)) => PreparedFace {
            id_embedding: read_embedding(embedding)?,
            aligned_224: read_image(crop)?,
            faces_found: 1,
            more_aligned_224: Vec::new(),
        },
        _ => bail!("pass --face PHOTO, or --face-embedding FILE with --face-crop IMAGE"),
    };

    let options = RenderOptions {
        trace: args.trace.is_some(),
        initial_latents: args
            .latents
            .as_deref()
            .map(read_latents)
            .into_iter()
            .collect::<Result<_>>()?,
        step_noise: Vec::new(),
    };
    let request = JobSettings {
        prompt: args.prompt,
        negative_prompt: args.negative_prompt,
        width: args.width,
        height: args.height,
        num_inference_steps: args.steps,
        guidance_scale: args.guidance,
        s_scale: args.s_scale,
        samples: args.samples,
        seed: args.seed,
        safety_checker: args.safety_checker,
        face_index: 0,
        candidates: 0,
        model: Default::default(),
    };
    let started = std::time::Instant::now();
    let output = pipeline.render(&request, &face, &options)?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "generated"
    );

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for (i, generated) in output.images.iter().enumerate() {
        let path = args.out.join(format!("headshot-{}-{i}.png", request.seed));
        let img = image::RgbImage::from_raw(
            generated.image.width,
            generated.image.height,
            generated.image.pixels.clone(),
        )
        .context("image buffer size")?;
        img.save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "{}{}",
            path.display(),
            if generated.nsfw {
                " (flagged by the safety checker, censored)"
            } else {
                ""
            }
        );
    }
    if let (Some(path), Some(trace)) = (&args.trace, &output.trace) {
        write_trace(trace, path)?;
        println!("{}", path.display());
    }
    Ok(())
}

/// The trace's tensors under diffusers' names, in one safetensors file.
fn write_trace(trace: &RenderTrace, path: &Path) -> Result<()> {
    let mut tensors = std::collections::HashMap::from([
        ("prompt_embeds", trace.prompt_embeds.clone()),
        ("id_tokens", trace.id_tokens.clone()),
        ("initial_latents", trace.initial_latents.clone()),
        ("latents_after_step0", trace.latents_after_step0.clone()),
        ("final_latents", trace.final_latents.clone()),
        ("image", trace.image.clone()),
    ]);
    if let Some(negative) = &trace.negative_prompt_embeds {
        tensors.insert("negative_prompt_embeds", negative.clone());
    }
    candle_core::safetensors::save(&tensors, path)
        .with_context(|| format!("writing the trace {}", path.display()))
}

/// The single tensor of a safetensors file, or the one named `preferred`.
fn read_tensor(path: &Path, preferred: &str) -> Result<Tensor> {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading safetensors {}", path.display()))?;
    if let Some(t) = tensors.remove(preferred) {
        return Ok(t);
    }
    if tensors.len() == 1 {
        return Ok(tensors.into_values().next().expect("one tensor"));
    }
    let names: Vec<_> = tensors.keys().cloned().collect();
    bail!(
        "{} holds {} tensors ({}); name the one to use `{preferred}`",
        path.display(),
        names.len(),
        names.join(", ")
    )
}

fn read_embedding(path: &Path) -> Result<Vec<f32>> {
    let t = read_tensor(path, "embedding")?;
    let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if values.len() != 512 {
        bail!(
            "{}: the face embedding has {} values, expected 512 ([512] or [1, 512])",
            path.display(),
            values.len()
        );
    }
    Ok(values)
}

fn read_latents(path: &Path) -> Result<Tensor> {
    Ok(read_tensor(path, "latents")?.to_dtype(DType::F32)?)
}

pub(crate) fn read_image(path: &Path) -> Result<RgbImage> {
    let img = image::open(path)
        .with_context(|| format!("reading the face crop {}", path.display()))?
        .to_rgb8();
    Ok(RgbImage {
        width: img.width(),
        height: img.height(),
        pixels: img.into_raw(),
    })
}
