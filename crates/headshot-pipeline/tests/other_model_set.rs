//! A model set that is not the committed fixture loads and runs: built here with other sizes
//! everywhere (2 UNet blocks, a 2-block VAE, i.e. 2 pixels per latent, 2 id tokens, a ViT with
//! patch 32 = 50 tokens, text width 32) and random weights, written in the real file formats
//! (diffusers/transformers folders, the adapter as `.safetensors`). Nothing in the pipeline may
//! depend on the fixture's dimensions.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use headshot_core::{JobSettings, PreparedFace};
use headshot_models::clip_text::{ClipTextConfig, ClipTextEncoder};
use headshot_models::clip_vision::{ClipVisionConfig, ClipVisionTransformer};
use headshot_models::face_projection::{FaceIdPlusConfig, FaceIdPlusProjection};
use headshot_models::ip_adapter::attention_layer_sites;
use headshot_models::unet::{UNet2DConditionModel, UNetConfig};
use headshot_models::vae::{VaeConfig, VaeDecoder};
use headshot_pipeline::{Pipeline, PipelineConfig, RenderOptions};

const TEXT_CONFIG: &str = r#"{"architectures": ["CLIPTextModel"], "vocab_size": 49408, "hidden_size": 32,
  "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
  "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05}"#;
const VISION_CONFIG: &str = r#"{"architectures": ["CLIPVisionModelWithProjection"], "hidden_size": 48,
  "intermediate_size": 96, "projection_dim": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_channels": 3, "image_size": 224, "patch_size": 32, "hidden_act": "gelu", "layer_norm_eps": 1e-05}"#;
const UNET_CONFIG: &str = r#"{"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 2,
  "block_out_channels": [8, 16], "center_input_sample": false, "cross_attention_dim": 32,
  "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "downsample_padding": 1, "flip_sin_to_cos": true,
  "freq_shift": 0, "in_channels": 4, "layers_per_block": 1, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
  "norm_num_groups": 4, "out_channels": 4, "sample_size": 32, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}"#;
const VAE_CONFIG: &str = r#"{"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [8, 16],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
  "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4,
  "scaling_factor": 0.5}"#;

/// Adds small random noise to every variable so the network is not degenerate (VarMap
/// initialises plain `get`s to zero).
fn randomise(varmap: &VarMap) {
    for var in varmap.data().lock().unwrap().values() {
        let t = var.as_tensor();
        let noise = Tensor::randn(0f32, 0.05, t.shape(), t.device()).unwrap();
        var.set(&(t + noise).unwrap()).unwrap();
    }
}

fn tensors(varmap: &VarMap, prefix: &str) -> HashMap<String, Tensor> {
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.as_tensor().clone()))
        .collect()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn build_model_set(root: &Path) {
    let dev = Device::Cpu;
    let fixtures = common::workspace().join("tests/fixtures/tiny/sd15");
    for file in [
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ] {
        std::fs::create_dir_all(root.join(file).parent().unwrap()).unwrap();
        std::fs::copy(fixtures.join(file), root.join(file)).unwrap();
    }

    let vm = VarMap::new();
    let cfg = ClipTextConfig::from_json_str(TEXT_CONFIG, Path::new("text")).unwrap();
    ClipTextEncoder::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), &cfg).unwrap();
    randomise(&vm);
    write(&root.join("text_encoder/config.json"), TEXT_CONFIG);
    vm.save(root.join("text_encoder/model.safetensors"))
        .unwrap();

    let vm = VarMap::new();
    let vision = ClipVisionConfig::from_json_str(VISION_CONFIG, Path::new("vision")).unwrap();
    ClipVisionTransformer::load(
        VarBuilder::from_varmap(&vm, DType::F32, &dev).pp("vision_model"),
        &vision,
    )
    .unwrap();
    randomise(&vm);
    write(&root.join("image_encoder/config.json"), VISION_CONFIG);
    vm.save(root.join("image_encoder/model.safetensors"))
        .unwrap();

    let vm = VarMap::new();
    let unet_cfg = UNetConfig::from_json_str(UNET_CONFIG).unwrap();
    UNet2DConditionModel::load(
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
        &unet_cfg,
        None,
    )
    .unwrap();
    randomise(&vm);
    write(&root.join("unet/config.json"), UNET_CONFIG);
    vm.save(root.join("unet/diffusion_pytorch_model.safetensors"))
        .unwrap();

    let vm = VarMap::new();
    let vae_cfg = VaeConfig::from_json_str(VAE_CONFIG, Path::new("vae")).unwrap();
    VaeDecoder::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), &vae_cfg).unwrap();
    randomise(&vm);
    write(&root.join("vae/config.json"), VAE_CONFIG);
    vm.save(root.join("vae/diffusion_pytorch_model.safetensors"))
        .unwrap();

    // The adapter: a 2-token FaceID-Plus projection over 48-wide CLIP features, and for every
    // attention layer a rank-2 LoRA (plus to_k_ip/to_v_ip on cross-attention), as safetensors.
    let vm = VarMap::new();
    let proj = FaceIdPlusConfig {
        id_embedding_dim: 512,
        id_hidden_dim: 64,
        num_tokens: 2,
        embed_dim: 32,
        clip_embedding_dim: 48,
        output_dim: 32,
        depth: 2,
        heads: 1,
        ff_inner_dim: 128,
    };
    FaceIdPlusProjection::load(VarBuilder::from_varmap(&vm, DType::F32, &dev), &proj).unwrap();
    randomise(&vm);
    let mut adapter = tensors(&vm, "image_proj.");
    let small = |shape: (usize, usize)| Tensor::randn(0f32, 0.05, shape, &dev).unwrap();
    for site in attention_layer_sites(&unet_cfg).unwrap() {
        let n = site.index;
        for (name, input) in [
            ("q", site.hidden),
            ("k", site.context_dim),
            ("v", site.context_dim),
            ("out", site.hidden),
        ] {
            adapter.insert(
                format!("ip_adapter.{n}.to_{name}_lora.down.weight"),
                small((2, input)),
            );
            adapter.insert(
                format!("ip_adapter.{n}.to_{name}_lora.up.weight"),
                small((site.hidden, 2)),
            );
        }
        if site.cross {
            adapter.insert(
                format!("ip_adapter.{n}.to_k_ip.weight"),
                small((site.hidden, 32)),
            );
            adapter.insert(
                format!("ip_adapter.{n}.to_v_ip.weight"),
                small((site.hidden, 32)),
            );
        }
    }
    std::fs::create_dir_all(root.join("adapter")).unwrap();
    candle_core::safetensors::save(&adapter, root.join("adapter/faceid.safetensors")).unwrap();

    let mut manifest = String::from("name = \"other\"\n[sources.set]\nlocal = \".\"\n");
    for (key, folder, files) in [
        ("tokenizer", "tokenizer", r#""vocab.json", "merges.txt""#),
        (
            "text_encoder",
            "text_encoder",
            r#""config.json", "model.safetensors""#,
        ),
        (
            "unet",
            "unet",
            r#""config.json", "diffusion_pytorch_model.safetensors""#,
        ),
        (
            "vae",
            "vae",
            r#""config.json", "diffusion_pytorch_model.safetensors""#,
        ),
        ("scheduler", "scheduler", r#""scheduler_config.json""#),
        (
            "image_encoder",
            "image_encoder",
            r#""config.json", "model.safetensors""#,
        ),
        ("ip_adapter", "adapter", r#""faceid.safetensors""#),
        // Not loaded (load_face_analyzer = false), but every manifest names them.
        ("face_detector", "faces", r#""det.onnx""#),
        ("face_recognizer", "faces", r#""rec.onnx""#),
    ] {
        manifest.push_str(&format!(
            "[components.{key}]\nsource = \"set\"\nfolder = \"{folder}\"\nfiles = [{files}]\n"
        ));
    }
    write(&root.join("other.toml"), &manifest);
}

#[test]
fn a_differently_sized_model_set_loads_and_renders() {
    let dir = tempfile::tempdir().unwrap();
    build_model_set(dir.path());
    let mut config = PipelineConfig::new(dir.path().join("other.toml"));
    config.load_face_analyzer = false;
    config.load_safety_checker = false;
    config.resolve.allow_download = false;
    let pipeline = Pipeline::load(&config).unwrap_or_else(|e| panic!("{e}"));

    let face = PreparedFace {
        id_embedding: vec![1.0 / (512f32).sqrt(); 512],
        aligned_224: common::golden_face_crop(),
        faces_found: 1,
        more_aligned_224: Vec::new(),
    };
    let request = |s_scale| JobSettings {
        prompt: "pretty woman".into(),
        negative_prompt: String::new(),
        width: 48,
        height: 32,
        num_inference_steps: 3,
        guidance_scale: 5.0,
        s_scale,
        samples: 2,
        seed: 4,
        safety_checker: None,
        face_index: 0,
        candidates: 0,
        model: Default::default(),
    };
    let out = pipeline
        .render(&request(1.0), &face, &RenderOptions::traced())
        .unwrap();
    // 2 pixels per latent cell with this VAE.
    assert_eq!(common::trace(&out).initial_latents.dims(), &[2, 4, 16, 24]);
    assert_eq!(
        common::trace(&out).id_tokens.dims(),
        &[4, 2, 32],
        "[uncond x2, cond x2] x 2 tokens x width 32"
    );
    assert_eq!(common::trace(&out).prompt_embeds.dims(), &[1, 77, 32]);
    assert_eq!(out.images.len(), 2);
    for img in &out.images {
        assert_eq!((img.image.width, img.image.height), (48, 32));
    }
    let values = common::trace(&out)
        .image
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(values
        .iter()
        .all(|v| v.is_finite() && (0.0..=1.0).contains(v)));

    // s_scale reaches the id tokens of this set too.
    let other = pipeline
        .render(&request(0.0), &face, &RenderOptions::traced())
        .unwrap();
    assert!(
        common::max_abs_diff(
            &common::trace(&out).id_tokens,
            &common::trace(&other).id_tokens
        ) > 1e-4
    );
}
