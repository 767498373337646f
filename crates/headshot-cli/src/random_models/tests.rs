//! The writer's shapes against the real models (parameter counts of diffusers / transformers at
//! SD1.5's configs, as in headshot-models' encoders_full_size test) and against the committed
//! tiny fixtures that diffusers itself wrote; determinism of the values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::dims::Dims;
use super::schema::{self, parameter_count, Spec};
use super::write::{draw, f16_bits};
use super::*;

fn count_with(specs: &[Spec], prefix: &str) -> usize {
    specs
        .iter()
        .filter(|s| s.name.starts_with(prefix))
        .map(Spec::numel)
        .sum()
}

#[test]
fn full_size_files_have_the_real_parameter_counts() {
    let d = Dims::FULL;
    // UNet2DConditionModel and AutoencoderKL at SD1.5's configs.
    assert_eq!(parameter_count(&schema::unet(&d)), 859_520_964);
    let vae = schema::vae(&d);
    assert_eq!(parameter_count(&vae), 83_653_863);
    assert_eq!(
        count_with(&vae, "decoder.") + count_with(&vae, "post_quant_conv."),
        49_490_179 + 20
    );
    // CLIPTextModel (SD1.5) and CLIPVisionModelWithProjection (ViT-H/14).
    assert_eq!(parameter_count(&schema::text_encoder(&d)), 123_060_480);
    let image = schema::image_encoder(&d);
    assert_eq!(parameter_count(&image), 632_076_800);
    assert_eq!(count_with(&image, "vision_model."), 630_766_080);
    // The safety checker: CLIP ViT-L/14's vision tower (303,179,776), its 1024 -> 768
    // projection, 17 + 3 concept embeddings of 768 and their thresholds.
    let safety = schema::safety_checker(&d);
    assert_eq!(
        count_with(&safety, "vision_model.vision_model."),
        303_179_776
    );
    assert_eq!(
        parameter_count(&safety),
        303_179_776 + 768 * 1024 + 20 * 768 + 20
    );
    // IPAdapterFaceIDPlusImageProjection(768, 768, 1280, heads 12), and per attention layer a
    // rank-128 LoRA on q/k/v/out plus to_k_ip/to_v_ip on the 16 cross-attention layers.
    let adapter = schema::ip_adapter(&d, &adapter_sites(&d).unwrap());
    assert_eq!(count_with(&adapter, "image_proj."), 33_581_568);
    let ip: Vec<_> = adapter
        .iter()
        .filter(|s| s.name.ends_with("_ip.weight"))
        .collect();
    assert_eq!(ip.len(), 32);
    assert_eq!(
        adapter
            .iter()
            .find(|s| s.name == "ip_adapter.1.to_k_ip.weight")
            .unwrap()
            .shape,
        [320, 768]
    );
    assert_eq!(
        adapter
            .iter()
            .find(|s| s.name == "ip_adapter.31.to_out_lora.up.weight")
            .unwrap()
            .shape,
        [1280, 128]
    );
}

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny")
        .join(path)
}

fn shapes_of_file(path: &Path) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    header
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.shape.clone()))
        .collect()
}

fn shapes_of_specs(specs: &[Spec], strip: &str) -> BTreeMap<String, Vec<usize>> {
    specs
        .iter()
        .filter_map(|s| Some((s.name.strip_prefix(strip)?.to_string(), s.shape.clone())))
        .collect()
}

#[test]
fn tiny_files_have_exactly_the_tensors_of_the_committed_fixtures() {
    let d = Dims::TINY;
    let pairs = [
        (
            "sd15/unet/diffusion_pytorch_model.safetensors",
            schema::unet(&d),
        ),
        // The base VAE (current attention names; the override keeps the legacy ones).
        (
            "sd15/vae/diffusion_pytorch_model.safetensors",
            schema::vae(&d),
        ),
        (
            "sd15/text_encoder/model.safetensors",
            schema::text_encoder(&d),
        ),
        (
            "sd15/safety_checker/model.safetensors",
            schema::safety_checker(&d),
        ),
        ("image_encoder/model.safetensors", schema::image_encoder(&d)),
    ];
    for (path, specs) in pairs {
        assert_eq!(
            shapes_of_specs(&specs, ""),
            shapes_of_file(&fixture(path)),
            "{path}"
        );
    }
    let committed = headshot_models::ip_adapter::IpAdapterWeights::load(&fixture(
        "ip-adapter/ip-adapter-faceid-plusv2_sd15.bin",
    ))
    .unwrap();
    let dims = |m: &std::collections::HashMap<String, candle_core::Tensor>| -> BTreeMap<String, Vec<usize>> {
        m.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect()
    };
    let adapter = schema::ip_adapter(&d, &adapter_sites(&d).unwrap());
    assert_eq!(
        shapes_of_specs(&adapter, "image_proj."),
        dims(committed.image_proj())
    );
    assert_eq!(
        shapes_of_specs(&adapter, "ip_adapter."),
        dims(committed.ip_adapter())
    );
}

#[test]
fn tiny_configs_match_the_committed_ones_where_loaders_read_them() {
    let d = Dims::TINY;
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fixture(p)).unwrap()).unwrap()
    };
    assert_eq!(configs::unet(&d), read("sd15/unet/config.json"));
    assert_eq!(configs::vae(&d), read("vae-ft-mse/config.json"));
    for (ours, path, keys) in [
        (
            configs::text_encoder(&d, false),
            "sd15/text_encoder/config.json",
            &[
                "hidden_size",
                "intermediate_size",
                "num_attention_heads",
                "num_hidden_layers",
                "hidden_act",
                "vocab_size",
            ][..],
        ),
        (
            configs::image_encoder(&d, false),
            "image_encoder/config.json",
            &[
                "hidden_size",
                "intermediate_size",
                "num_attention_heads",
                "num_hidden_layers",
                "hidden_act",
                "projection_dim",
                "patch_size",
            ][..],
        ),
    ] {
        let theirs = read(path);
        for key in keys {
            assert_eq!(ours[key], theirs[key], "{path}: {key}");
        }
    }
    let theirs = read("sd15/safety_checker/config.json");
    let ours = configs::safety_checker(&d, false);
    assert_eq!(ours["projection_dim"], theirs["projection_dim"]);
    for key in [
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_hidden_layers",
        "hidden_act",
    ] {
        assert_eq!(
            ours["vision_config"][key], theirs["vision_config"][key],
            "safety vision_config {key}"
        );
    }
}

#[test]
fn values_depend_only_on_the_seed_and_the_name() {
    let specs = schema::vae(&Dims::TINY);
    let a = draw(7, "vae", &specs);
    assert_eq!(a, draw(7, "vae", &specs));
    assert_ne!(a, draw(8, "vae", &specs));
    // A tensor's values do not depend on which other tensors are drawn with it.
    let one = specs
        .iter()
        .position(|s| s.name == "decoder.conv_in.weight")
        .unwrap();
    assert_eq!(draw(7, "vae", &specs[one..=one])[0], a[one]);
    // The centred bias follows its weight: -E[silu] * sum per output channel.
    let w = specs
        .iter()
        .position(|s| s.name == "decoder.conv_out.weight")
        .unwrap();
    let b = specs
        .iter()
        .position(|s| s.name == "decoder.conv_out.bias")
        .unwrap();
    let per = a[w].len() / 3;
    let expected = -schema::SILU_MEAN * a[w][..per].iter().map(|v| *v as f64).sum::<f64>();
    assert!((a[b][0] as f64 - expected).abs() < 1e-6);
    // Normals with the asked-for spread: the norm weights are 1 + 0.1 N.
    let norm = specs
        .iter()
        .position(|s| s.name == "decoder.mid_block.resnets.0.norm1.weight")
        .unwrap();
    let mean = a[norm].iter().sum::<f32>() / a[norm].len() as f32;
    assert!((mean - 1.0).abs() < 0.05, "{mean}");
}

#[test]
fn f16_rounding_matches_ieee_binary16() {
    for (v, bits) in [
        (0.0f32, 0x0000u16),
        (-0.0, 0x8000),
        (1.0, 0x3c00),
        (-2.0, 0xc000),
        (0.1, 0x2e66),
        (65504.0, 0x7bff),
        (65520.0, 0x7c00),
        (1e6, 0x7c00),
        (5.960_464_5e-8, 0x0001),
        (6.097_555e-5, 0x03ff),
        (1.000_976_6, 0x3c01),
        (1.000_488_3, 0x3c00), // halfway between 0x3c00 and 0x3c01: to even
        (f32::INFINITY, 0x7c00),
    ] {
        assert_eq!(f16_bits(v), bits, "{v}");
    }
    assert_eq!(f16_bits(f32::NAN) & 0x7c00, 0x7c00);
    assert_ne!(f16_bits(f32::NAN) & 0x3ff, 0);
}
