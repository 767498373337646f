//! Users' LoRAs against diffusers on the tiny model set: tests/fixtures/tiny/loras/tiny-style
//! (kohya format, written by tools/fixtures/gen_lora.py) at strength 0.7 beside the adapter's
//! own LoRA must give diffusers' `load_lora_weights` + `set_adapters` image; jobs without the
//! LoRA before and after must give the very same image (the base models are never touched);
//! unknown names and broken files are refused with the name or file in the message.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use common::{check_e2e, max_abs_diff, trace, workspace, E2eTolerance, Golden, E2E_CASES};
use headshot_core::LoraChoice;
use headshot_pipeline::{LoraFolder, Pipeline, PipelineConfig, PipelineError};

const LORA_GOLDEN: &str = "e2e_lora0.7_s1_g7.5_512x512_n1_neg_21";
/// The case the LoRA golden repeats with the LoRA.
const BASE_GOLDEN: &str = E2E_CASES[0];

fn fixture_loras() -> PathBuf {
    workspace().join("tests/fixtures/tiny/loras")
}

/// The tiny set (CPU, f32, no face models) with `loras` as its LoRA folder.
fn tiny_with_loras(loras: &Path) -> Pipeline {
    let mut config = PipelineConfig::new(workspace().join("models/tiny.toml"));
    config.load_face_analyzer = false;
    config.resolve.allow_download = false;
    config.resolve.progress = false;
    config.lora_folder = Some(LoraFolder::scan(loras).expect("listing the LoRA folder"));
    Pipeline::load(&config).unwrap_or_else(|e| panic!("loading the tiny pipeline: {e}"))
}

fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| tiny_with_loras(&fixture_loras()))
}

#[test]
fn the_folder_lists_the_fixture_lora() {
    let folder = LoraFolder::scan(fixture_loras()).unwrap();
    assert_eq!(folder.names().collect::<Vec<_>>(), vec!["tiny-style"]);
    assert!(folder.path("tiny-style").unwrap().is_file());
    assert!(folder.path("../tiny-style").is_none());
}

#[test]
fn lora_at_0_7_matches_diffusers() {
    check_e2e(pipeline(), LORA_GOLDEN, &E2eTolerance::F32);
}

#[test]
fn jobs_without_the_lora_are_unchanged_before_and_after_it() {
    let pipeline = pipeline();
    let base = Golden::read(BASE_GOLDEN);
    let with_lora = Golden::read(LORA_GOLDEN);
    let render = |golden: &Golden| {
        pipeline
            .render(&golden.e2e_job(), &golden.e2e_face(), &golden.e2e_options())
            .unwrap_or_else(|e| panic!("{}: {e}", golden.name))
    };
    let before = render(&base);
    let lora = render(&with_lora);
    let again = render(&with_lora);
    let after = render(&base);
    assert_eq!(
        max_abs_diff(&trace(&before).image, &trace(&after).image),
        0.0
    );
    assert_eq!(before.images[0].image.pixels, after.images[0].image.pixels);
    // The cached set (an LRU of one) renders as the freshly merged one did.
    assert_eq!(lora.images[0].image.pixels, again.images[0].image.pixels);
    let effect = max_abs_diff(&trace(&before).image, &trace(&lora).image);
    assert!(effect > 0.02, "the LoRA changed the image by only {effect}");
}

fn lora_job_error(pipeline: &Pipeline, name: &str) -> String {
    let golden = Golden::read(BASE_GOLDEN);
    let mut job = golden.e2e_job();
    job.num_inference_steps = 1;
    job.model.loras = vec![LoraChoice {
        name: name.to_string(),
        strength: 1.0,
    }];
    match pipeline.render(&job, &golden.e2e_face(), &Default::default()) {
        Ok(_) => panic!("a job with LoRA {name} rendered"),
        Err(err @ PipelineError::InvalidInput(_)) => err.to_string(),
        Err(other) => {
            let generation: headshot_core::GenerationError = other.into();
            match generation {
                headshot_core::GenerationError::InvalidInput(message) => message,
                other => panic!("LoRA {name}: not an input error: {other}"),
            }
        }
    }
}

#[test]
fn an_unknown_lora_is_refused_naming_the_folder() {
    let message = lora_job_error(pipeline(), "no-such-lora");
    assert!(
        message.starts_with("The lora model no-such-lora is not in the LoRA folder "),
        "{message}"
    );
    assert!(
        message.contains(&fixture_loras().display().to_string()),
        "{message}"
    );
}

/// A LoRA folder of its own for one test.
fn scratch_folder(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("headshot-lora-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture_tensors() -> HashMap<String, Tensor> {
    let path = fixture_loras().join("tiny-style.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn broken_lora_files_are_refused_naming_the_file() {
    let dir = scratch_folder("broken");
    // Model weights, not a LoRA.
    std::fs::copy(
        workspace().join("tests/fixtures/tiny/vae-ft-mse/diffusion_pytorch_model.safetensors"),
        dir.join("vae.safetensors"),
    )
    .unwrap();
    // The fixture with one factor of the wrong width.
    let mut tensors = fixture_tensors();
    let key = tensors
        .keys()
        .find(|k| k.starts_with("lora_unet_down_blocks_0") && k.ends_with("to_q.lora_down.weight"))
        .cloned()
        .expect("the fixture adapts down_blocks.0's attention");
    let (rank, width) = tensors[&key].dims2().unwrap();
    tensors.insert(
        key,
        Tensor::zeros((rank, width + 1), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, dir.join("wrong-shape.safetensors")).unwrap();
    // The fixture for another model: a module our UNet does not have.
    let mut tensors = fixture_tensors();
    let moved: Vec<_> = tensors
        .keys()
        .filter(|k| k.starts_with("lora_unet_down_blocks_0_"))
        .cloned()
        .collect();
    for key in moved {
        let t = tensors.remove(&key).unwrap();
        tensors.insert(key.replace("down_blocks_0_", "down_blocks_7_"), t);
    }
    candle_core::safetensors::save(&tensors, dir.join("other-model.safetensors")).unwrap();

    let pipeline = tiny_with_loras(&dir);
    let message = lora_job_error(&pipeline, "vae");
    assert!(message.contains("is not a kohya / A1111 LoRA"), "{message}");
    assert!(message.contains("vae.safetensors"), "{message}");
    let message = lora_job_error(&pipeline, "wrong-shape");
    assert!(
        message.contains("wrong-shape.safetensors does not fit `lora_unet_down_blocks_0"),
        "{message}"
    );
    let message = lora_job_error(&pipeline, "other-model");
    assert!(
        message.contains("adapts `lora_unet_down_blocks_7_"),
        "{message}"
    );
    assert!(
        message.contains("which this model does not have"),
        "{message}"
    );
    // Jobs without a LoRA still render on that pipeline.
    check_e2e(&pipeline, BASE_GOLDEN, &E2eTolerance::F32);
    std::fs::remove_dir_all(&dir).ok();
}
