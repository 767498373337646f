//! Single-file checkpoints: the fixtures of tools/fixtures/gen_single_file.py (rebuilt from
//! their committed description, sha256-checked) serve every tensor of tiny/sd15 under our names,
//! for each variant (fp32, fp16, with and without EMA copies, older text-encoder layout, .ckpt),
//! and wrong files fail with errors that say what they are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use headshot_test_support::single_file::{build, description, fixture_dir};
use headshot_test_support::workspace;
use headshot_weights::single_file::{
    names, Part, PartLayout, SingleFile, SingleFileError, UnetLayout, UnetWeights,
};

fn sd15() -> PathBuf {
    workspace().join("tests/fixtures/tiny/sd15")
}

fn config(part: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(sd15().join(part).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn layouts() -> [(PartLayout, &'static str); 3] {
    let unet = config("unet");
    let blocks = unet["block_out_channels"].as_array().unwrap().len();
    let layers = unet["layers_per_block"].as_u64().unwrap() as usize;
    let vae_blocks = config("vae")["block_out_channels"]
        .as_array()
        .unwrap()
        .len();
    [
        (
            PartLayout::Unet(UnetLayout {
                layers_per_block: vec![layers; blocks],
            }),
            "unet/diffusion_pytorch_model.safetensors",
        ),
        (
            PartLayout::Vae {
                up_blocks: vae_blocks,
            },
            "vae/diffusion_pytorch_model.safetensors",
        ),
        (PartLayout::TextEncoder, "text_encoder/model.safetensors"),
    ]
}

fn source(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(sd15().join(file), &Device::Cpu).unwrap()
}

/// Every tensor of the diffusers folder, read from `file` under its diffusers name, equals
/// `expected(part, source tensor)`.
fn assert_serves_folder(
    file: &Arc<SingleFile>,
    parts: &[Part],
    expected: impl Fn(Part, &Tensor) -> Tensor,
) {
    for (layout, src) in layouts() {
        let part = layout.part();
        if !parts.contains(&part) {
            continue;
        }
        let tensors = source(src);
        let dtype = if expected(part, tensors.values().next().unwrap()).dtype() == DType::F16 {
            DType::F16
        } else {
            DType::F32
        };
        let checked = file
            .load(layout, dtype, &Device::Cpu, |vb| {
                for (name, want) in &tensors {
                    let got = vb.get(want.dims(), name)?;
                    let want = expected(part, want);
                    let same = got.eq(&want)?.flatten_all()?.min(0)?.to_scalar::<u8>()? == 1;
                    assert!(same, "{part} {name} differs from the folder's");
                }
                Ok::<_, candle_core::Error>(tensors.len())
            })
            .unwrap_or_else(|e| panic!("{part}: {e}"));
        assert!(checked > 10, "{part}: {checked} tensors");
    }
}

const ALL: [Part; 3] = [Part::Unet, Part::Vae, Part::TextEncoder];

#[test]
fn names_match_the_generator_checked_against_diffusers() {
    // Each row: LDM key, part, diffusers key, 1x1 conv (checked by the generator by running
    // diffusers' converters on the file).
    let desc = description();
    let [(unet, _), (vae, _), _] = layouts();
    let (PartLayout::Unet(unet), PartLayout::Vae { up_blocks }) = (unet, vae) else {
        unreachable!()
    };
    let mut rows = 0;
    for row in desc["tensors"].as_array().unwrap() {
        let (ldm, part, key) = (
            row[0].as_str().unwrap(),
            row[1].as_str().unwrap(),
            row[2].as_str().unwrap(),
        );
        match part {
            "unet" => {
                let ours = names::unet_ldm_names(key, &unet);
                let ldm = ldm.strip_prefix("model.diffusion_model.").unwrap();
                assert!(
                    ours.iter().any(|n| n == ldm),
                    "{key}: ours {ours:?}, generator {ldm}"
                );
            }
            "vae" => {
                let ldm = ldm.strip_prefix("first_stage_model.").unwrap();
                assert_eq!(
                    names::vae_ldm_name(key, up_blocks).as_deref(),
                    Some(ldm),
                    "{key}"
                );
            }
            _ => continue,
        }
        rows += 1;
    }
    assert!(rows > 700, "{rows} rows");
}

#[test]
fn fp32_and_fp16_files_serve_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let fp32 = Arc::new(SingleFile::open(build("fp32", dir.path())).unwrap());
    assert_eq!(fp32.unet_weights(), Some(UnetWeights::Plain));
    assert_serves_folder(&fp32, &ALL, |_, t| t.clone());
    let fp16 = Arc::new(SingleFile::open(build("fp16", dir.path())).unwrap());
    assert_serves_folder(&fp16, &ALL, |_, t| t.to_dtype(DType::F16).unwrap());
}

#[test]
fn ema_copies_are_picked_like_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    // Both copies (the EMA one negated): the non-EMA weights, diffusers' default.
    let both = Arc::new(SingleFile::open(build("fp32-ema-both", dir.path())).unwrap());
    assert_eq!(both.unet_weights(), Some(UnetWeights::Plain));
    assert_serves_folder(&both, &[Part::Unet], |_, t| t.clone());
    // Only the EMA copy (flat `model_ema.*` names): that one.
    let only = Arc::new(SingleFile::open(build("fp32-ema-only", dir.path())).unwrap());
    assert_eq!(only.unet_weights(), Some(UnetWeights::EmaOnly));
    assert_serves_folder(&only, &ALL, |_, t| t.clone());
}

#[test]
fn older_text_encoder_layout_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = Arc::new(SingleFile::open(build("fp32-legacy-text", dir.path())).unwrap());
    assert_serves_folder(&legacy, &[Part::TextEncoder], |_, t| t.clone());
}

#[test]
fn ckpt_state_dict_wrapper_is_read() {
    let ckpt = Arc::new(SingleFile::open(fixture_dir().join("unet-vae-fp16.ckpt")).unwrap());
    assert_serves_folder(&ckpt, &[Part::Unet, Part::Vae], |_, t| {
        t.to_dtype(DType::F16).unwrap()
    });
    // It holds no text encoder: asking for one says so.
    let err = ckpt
        .load(PartLayout::TextEncoder, DType::F32, &Device::Cpu, |_| {
            Ok::<_, candle_core::Error>(())
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            SingleFileError::PartMissing {
                part: Part::TextEncoder,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("cond_stage_model.transformer."),
        "{err}"
    );
}

#[test]
fn plain_and_training_ckpts_are_read() {
    // A plain OrderedDict state dict, and a Lightning training save whose other entries
    // (callbacks, hyper-parameters, optimizer state) are stepped over; both hold conv_in only.
    let conv_in = source("unet/diffusion_pytorch_model.safetensors");
    let [(unet, _), ..] = layouts();
    for name in ["plain-state-dict.ckpt", "training-state.ckpt"] {
        let file = Arc::new(
            SingleFile::open(fixture_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}")),
        );
        assert!(
            file.has(Part::Unet) && !file.has(Part::Vae),
            "{name}: {file:?}"
        );
        file.load(unet.clone(), DType::F32, &Device::Cpu, |vb| {
            for key in ["conv_in.weight", "conv_in.bias"] {
                let want = &conv_in[key];
                let got = vb.get(want.dims(), key)?;
                let diff = (got - want)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                assert_eq!(diff, 0.0, "{name}: {key}");
            }
            Ok::<_, candle_core::Error>(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

fn write_safetensors(path: &Path, keys: &[(&str, &[usize])]) {
    let tensors: HashMap<String, Tensor> = keys
        .iter()
        .map(|(k, dims)| {
            (
                k.to_string(),
                Tensor::zeros(*dims, DType::F16, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    candle_core::safetensors::save(&tensors, path).unwrap();
}

const UNET_KEY: &str = "model.diffusion_model.input_blocks.0.0.weight";

#[test]
fn sdxl_and_sd2_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let sdxl = dir.path().join("sdxl.safetensors");
    write_safetensors(
        &sdxl,
        &[
            (UNET_KEY, &[320, 4, 3, 3]),
            (
                "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
                &[8, 4],
            ),
        ],
    );
    let err = SingleFile::open(&sdxl).unwrap_err();
    assert!(matches!(err, SingleFileError::Sdxl { .. }), "{err:?}");
    assert!(
        err.to_string().contains("SDXL") && err.to_string().contains("sdxl.safetensors"),
        "{err}"
    );

    let sd2 = dir.path().join("sd2.safetensors");
    write_safetensors(
        &sd2,
        &[
            (UNET_KEY, &[320, 4, 3, 3]),
            ("cond_stage_model.model.token_embedding.weight", &[8, 4]),
        ],
    );
    let err = SingleFile::open(&sd2).unwrap_err();
    assert!(matches!(err, SingleFileError::Sd2 { .. }), "{err:?}");
    assert!(err.to_string().contains("Stable Diffusion 2.x"), "{err}");

    // An SD2 UNet alone: its cross-attention is 1024 wide.
    let sd2_unet = dir.path().join("sd2-unet.safetensors");
    write_safetensors(
        &sd2_unet,
        &[(
            "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
            &[320, 1024],
        )],
    );
    let err = SingleFile::open(&sd2_unet).unwrap_err();
    assert!(
        err.to_string().contains("1024-wide cross-attention"),
        "{err}"
    );
}

#[test]
fn truncated_and_foreign_files_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(build("fp16", dir.path())).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let err = SingleFile::open(&cut).unwrap_err();
    assert!(matches!(err, SingleFileError::Unreadable { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated or corrupt"), "{err}");

    let ckpt = std::fs::read(fixture_dir().join("unet-vae-fp16.ckpt")).unwrap();
    let cut_ckpt = dir.path().join("cut.ckpt");
    std::fs::write(&cut_ckpt, &ckpt[..ckpt.len() - 4096]).unwrap();
    let err = SingleFile::open(&cut_ckpt).unwrap_err();
    assert!(err.to_string().contains("truncated or corrupt"), "{err}");

    // A diffusers folder's UNet file is not a single-file checkpoint.
    let err =
        SingleFile::open(sd15().join("unet/diffusion_pytorch_model.safetensors")).unwrap_err();
    assert!(matches!(err, SingleFileError::NotLdm { .. }), "{err:?}");
    assert!(
        err.to_string().contains("one part of a diffusers folder"),
        "{err}"
    );

    let err = SingleFile::open(dir.path().join("model.gguf")).unwrap_err();
    assert!(
        matches!(err, SingleFileError::UnknownFormat { .. }),
        "{err:?}"
    );
}

#[test]
fn missing_tensors_are_all_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.safetensors");
    // A UNet with only conv_in: every other tensor the model asks for is missing.
    write_safetensors(
        &path,
        &[
            (UNET_KEY, &[16, 4, 3, 3]),
            ("model.diffusion_model.input_blocks.0.0.bias", &[16]),
        ],
    );
    let file = Arc::new(SingleFile::open(&path).unwrap());
    let [(unet, _), ..] = layouts();
    let err = file
        .load(unet, DType::F32, &Device::Cpu, |vb| {
            vb.get((16, 4, 3, 3), "conv_in.weight")?;
            vb.get(16, "conv_in.bias")?;
            vb.get((32, 16), "time_embedding.linear_1.weight")?;
            vb.get(16, "down_blocks.0.resnets.0.norm1.weight")?;
            vb.get(4, "class_embedding.weight")?;
            Ok::<_, candle_core::Error>(())
        })
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, SingleFileError::MissingTensors { count: 3, .. }),
        "{text}"
    );
    assert!(
        text.contains(
            "`model.diffusion_model.time_embed.0.weight` (time_embedding.linear_1.weight)"
        ) && text.contains("`model.diffusion_model.input_blocks.1.0.in_layers.0.weight`")
            && text.contains("`class_embedding.weight` (no LDM name)"),
        "{text}"
    );
}
