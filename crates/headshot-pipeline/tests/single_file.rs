//! Single-file checkpoints (original LDM / A1111 layout) against diffusers'
//! `StableDiffusionPipeline.from_single_file`: the tiny set written as one file by
//! tools/fixtures/gen_single_file.py (rebuilt here from its committed description, sha256-checked),
//! fp32 and fp16, loaded with the rest of the tiny set (tokenizer, configs, scheduler, FaceID
//! adapter, image encoder) and run end to end; the final image within 2e-3 of diffusers'.
//! The checkpoint's own VAE is used, as from_single_file does.

mod common;

use std::path::{Path, PathBuf};

use common::{check_e2e, workspace, E2eTolerance, E2E_CASES};
use headshot_pipeline::{ModelSet, Pipeline, PipelineConfig};
use headshot_weights::{ComponentKind, Manifest, ResolveOptions};

fn checkpoint(variant: &str) -> PathBuf {
    common::single_file_checkpoint(variant)
}

fn options() -> ResolveOptions {
    ResolveOptions {
        cache_dir: std::env::temp_dir().join("headshot-single-file-no-cache"),
        allow_download: false,
        progress: false,
        only: Some(ComponentKind::except_face_models()),
    }
}

fn load(manifest: &Manifest) -> Result<Pipeline, headshot_pipeline::PipelineError> {
    let set = headshot_weights::resolve(manifest, &options()).unwrap();
    let mut config = PipelineConfig::new("unused.toml");
    config.models = ModelSet::Resolved(set);
    config.load_face_analyzer = false;
    Pipeline::load(&config)
}

fn golden(variant: &str) -> String {
    format!("single_file_{variant}_{}", E2E_CASES[0])
}

/// A manifest naming the checkpoint, the way an operator writes one: the tiny set's components,
/// the UNet, VAE and text encoder listing only their config.
fn manifest_with_checkpoint_entry(dir: &Path, checkpoint: &Path) -> PathBuf {
    let tiny = std::fs::read_to_string(workspace().join("models/tiny.toml")).unwrap();
    let tiny = tiny
        // The VAE's config from the base folder (not the override's weights).
        .replace(
            "local = \"../tests/fixtures/tiny/vae-ft-mse\"\nfiles = [\"config.json\", \"diffusion_pytorch_model.safetensors\"]",
            "source = \"sd15\"\nfolder = \"vae\"\nfiles = [\"config.json\"]",
        )
        .replace(
            "files = [\"config.json\", \"model.safetensors\"]\n\n[components.unet]",
            "files = [\"config.json\"]\n\n[components.unet]",
        )
        .replace(
            "files = [\"config.json\", \"diffusion_pytorch_model.safetensors\"]\n\n# Like",
            "files = [\"config.json\"]\n\n# Like",
        )
        .replace("\"../", &format!("\"{}/", workspace().display()));
    let text = format!(
        "{tiny}\n[components.checkpoint]\nlocal = \"{}\"\nfiles = [\"{}\"]\n",
        checkpoint.parent().unwrap().display(),
        checkpoint.file_name().unwrap().to_string_lossy()
    );
    let path = dir.join("single-file.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn fp32_checkpoint_as_a_plain_path_matches_from_single_file() {
    // `--models file.safetensors`: a base set completed with the file (here tiny.toml as base).
    let base = Manifest::from_file(workspace().join("models/tiny.toml")).unwrap();
    let manifest = base.with_checkpoint(&checkpoint("fp32")).unwrap();
    let pipeline = load(&manifest).unwrap_or_else(|e| panic!("{e:?}"));
    check_e2e(&pipeline, &golden("fp32"), &E2eTolerance::F32);
}

#[test]
fn fp16_checkpoint_named_in_a_manifest_matches_from_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = manifest_with_checkpoint_entry(dir.path(), &checkpoint("fp16"));
    let manifest = Manifest::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    for kind in [
        ComponentKind::Unet,
        ComponentKind::Vae,
        ComponentKind::TextEncoder,
    ] {
        assert_eq!(
            manifest.component(kind).unwrap().files,
            ["config.json"],
            "{kind}"
        );
    }
    let pipeline = load(&manifest).unwrap_or_else(|e| panic!("{e:?}"));
    // The file's fp16 weights run in f32, as diffusers ran them (torch_dtype=float32).
    check_e2e(&pipeline, &golden("fp16"), &E2eTolerance::F32);
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn a_truncated_checkpoint_fails_the_load_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(checkpoint("fp16")).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let base = Manifest::from_file(workspace().join("models/tiny.toml")).unwrap();
    let err = load(&base.with_checkpoint(&cut).unwrap())
        .err()
        .expect("a truncated file fails");
    let text = error_chain(&err);
    assert!(
        text.contains("cut.safetensors") && text.contains("truncated or corrupt"),
        "{text}"
    );
}
