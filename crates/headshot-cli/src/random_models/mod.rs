//! `headshot random-models`: a complete model set with random weights in the real file formats
//! (diffusers folders, safetensors, the adapter's `image_proj.*` / `ip_adapter.*` tensors) and
//! real shapes, deterministic from a seed, plus a manifest that `--models` accepts. No download:
//! the GPU kit writes the full-size set on the box itself, and diffusers loads the same folders.

pub mod configs;
pub mod dims;
pub mod schema;
pub mod write;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use headshot_models::ip_adapter::attention_layer_sites;
use headshot_models::unet::UNetConfig;

use dims::Dims;
use schema::{AdapterSite, Spec};
use write::FileDtype;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Size {
    /// SD1.5 + FaceID-PlusV2 + ViT-H/14 + safety checker at their real configs (~4 GB in f16).
    Full,
    /// The shapes of tests/fixtures/tiny (a few MB).
    Tiny,
}

impl Size {
    pub fn dims(self) -> Dims {
        match self {
            Size::Full => Dims::FULL,
            Size::Tiny => Dims::TINY,
        }
    }
}

#[derive(Args)]
pub struct RandomModelsArgs {
    #[arg(long, value_enum, default_value = "full")]
    pub size: Size,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Element type of the weight files.
    #[arg(long, value_enum, default_value = "f16")]
    pub dtype: FileDtype,
    /// Folder holding the buffalo_s face models (scrfd_500m_bnkps.onnx, w600k_mbf.onnx), copied
    /// into the set (e.g. target/test-assets).
    #[arg(long, env = "HEADSHOT_FACE_MODELS")]
    pub face_models: PathBuf,
    /// Output folder (created; files in it are overwritten). The manifest is `<out>/models.toml`.
    #[arg(long)]
    pub out: PathBuf,
}

pub const ADAPTER_FILE: &str = "ip-adapter-faceid-plusv2_sd15.safetensors";
pub const FACE_DETECTOR: &str = "scrfd_500m_bnkps.onnx";
pub const FACE_RECOGNIZER: &str = "w600k_mbf.onnx";

/// SD1.5's CLIP tokenizer files. The committed fixture's vocab.json/merges.txt are CLIP's real
/// BPE table (rebuilt from open_clip's by tools/fixtures/gen_tokenizer.py), so the set tokenizes
/// exactly like SD1.5.
const TOKENIZER_FILES: [(&str, &[u8]); 4] = [
    (
        "vocab.json",
        include_bytes!("../../../../tests/fixtures/tiny/sd15/tokenizer/vocab.json"),
    ),
    (
        "merges.txt",
        include_bytes!("../../../../tests/fixtures/tiny/sd15/tokenizer/merges.txt"),
    ),
    (
        "tokenizer_config.json",
        include_bytes!("../../../../tests/fixtures/tiny/sd15/tokenizer/tokenizer_config.json"),
    ),
    (
        "special_tokens_map.json",
        include_bytes!("../../../../tests/fixtures/tiny/sd15/tokenizer/special_tokens_map.json"),
    ),
];

/// One weights file of the set: where it goes (relative to the output folder) and its tensors.
pub struct WeightsFile {
    pub path: &'static str,
    pub specs: Vec<Spec>,
}

/// The adapter's attention sites for this UNet, from the same code that loads the adapter.
pub fn adapter_sites(d: &Dims) -> Result<Vec<AdapterSite>> {
    let cfg = UNetConfig::from_json_str(&configs::unet(d).to_string())?;
    Ok(attention_layer_sites(&cfg)?
        .into_iter()
        .map(|s| AdapterSite {
            index: s.index,
            hidden: s.hidden,
            context: s.context_dim,
            cross: s.cross,
        })
        .collect())
}

/// Every weights file of the set.
pub fn weight_files(d: &Dims) -> Result<Vec<WeightsFile>> {
    Ok(vec![
        WeightsFile {
            path: "sd15/unet/diffusion_pytorch_model.safetensors",
            specs: schema::unet(d),
        },
        WeightsFile {
            path: "sd15/vae/diffusion_pytorch_model.safetensors",
            specs: schema::vae(d),
        },
        WeightsFile {
            path: "sd15/text_encoder/model.safetensors",
            specs: schema::text_encoder(d),
        },
        WeightsFile {
            path: "sd15/safety_checker/model.safetensors",
            specs: schema::safety_checker(d),
        },
        WeightsFile {
            path: "image_encoder/model.safetensors",
            specs: schema::image_encoder(d),
        },
        WeightsFile {
            path: "ip-adapter/ip-adapter-faceid-plusv2_sd15.safetensors",
            specs: schema::ip_adapter(d, &adapter_sites(d)?),
        },
    ])
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    write_text(path, &(serde_json::to_string_pretty(value)? + "\n"))
}

fn manifest(args: &RandomModelsArgs) -> String {
    let size = format!("{:?}", args.size).to_lowercase();
    format!(
        r#"# Written by `headshot random-models --size {size} --seed {seed}`: random weights in the real
# file formats and shapes (not a trained model; images are noise-like). Relative folders start at
# this file's folder.
name = "random-{size}-seed{seed}"
description = "random-weight SD1.5 + FaceID-PlusV2 + ViT-H/14 + safety checker ({size} size), buffalo_s"

[sources.sd15]
local = "sd15"

[components.tokenizer]
source = "sd15"
folder = "tokenizer"
files = ["vocab.json", "merges.txt"]

[components.text_encoder]
source = "sd15"
folder = "text_encoder"
files = ["config.json", "model.safetensors"]

[components.unet]
source = "sd15"
folder = "unet"
files = ["config.json", "diffusion_pytorch_model.safetensors"]

[components.vae]
source = "sd15"
folder = "vae"
files = ["config.json", "diffusion_pytorch_model.safetensors"]

[components.scheduler]
source = "sd15"
folder = "scheduler"
files = ["scheduler_config.json"]

[components.image_encoder]
local = "image_encoder"
files = ["config.json", "model.safetensors"]

[components.ip_adapter]
local = "ip-adapter"
files = ["{ADAPTER_FILE}"]

[components.safety_checker]
source = "sd15"
folder = "safety_checker"
files = ["config.json", "model.safetensors"]

[components.feature_extractor]
source = "sd15"
folder = "feature_extractor"
files = ["preprocessor_config.json"]

[components.face_detector]
local = "buffalo_s"
files = ["{FACE_DETECTOR}"]

[components.face_recognizer]
local = "buffalo_s"
files = ["{FACE_RECOGNIZER}"]
"#,
        seed = args.seed
    )
}

pub fn run(args: RandomModelsArgs) -> Result<()> {
    let started = Instant::now();
    let d = args.size.dims();
    let f16 = args.dtype == FileDtype::F16;
    let out = &args.out;
    for name in [FACE_DETECTOR, FACE_RECOGNIZER] {
        let from = args.face_models.join(name);
        if !from.is_file() {
            bail!(
                "{} not found (--face-models must hold the buffalo_s ONNX pair)",
                from.display()
            );
        }
        let to = out.join("buffalo_s").join(name);
        std::fs::create_dir_all(to.parent().unwrap())?;
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    let sd = out.join("sd15");
    write_json(&sd.join("model_index.json"), &configs::model_index())?;
    write_json(&sd.join("unet/config.json"), &configs::unet(&d))?;
    write_json(&sd.join("vae/config.json"), &configs::vae(&d))?;
    write_json(
        &sd.join("text_encoder/config.json"),
        &configs::text_encoder(&d, f16),
    )?;
    write_json(
        &sd.join("safety_checker/config.json"),
        &configs::safety_checker(&d, f16),
    )?;
    write_json(
        &sd.join("scheduler/scheduler_config.json"),
        &configs::scheduler(),
    )?;
    write_json(
        &sd.join("feature_extractor/preprocessor_config.json"),
        &configs::feature_extractor(),
    )?;
    write_json(
        &out.join("image_encoder/config.json"),
        &configs::image_encoder(&d, f16),
    )?;
    for (name, bytes) in TOKENIZER_FILES {
        let path = sd.join("tokenizer").join(name);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut total = 0usize;
    for file in weight_files(&d)? {
        let t = Instant::now();
        write::write_safetensors(
            &out.join(file.path),
            args.seed,
            file.path,
            &file.specs,
            args.dtype,
        )?;
        let params = schema::parameter_count(&file.specs);
        total += params;
        tracing::info!(
            file = file.path,
            params,
            elapsed_ms = t.elapsed().as_millis() as u64,
            "wrote"
        );
    }
    let manifest_path = out.join("models.toml");
    write_text(&manifest_path, &manifest(&args))?;
    // The manifest must be one `--models` accepts.
    headshot_weights::Manifest::from_file(&manifest_path)?;
    println!(
        "{}",
        serde_json::json!({
            "manifest": manifest_path,
            "parameters": total,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests;
