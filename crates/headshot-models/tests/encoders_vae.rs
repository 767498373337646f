//! VAE decoder vs diffusers' AutoencoderKL.decode (goldens/vae_decode.safetensors), for the base
//! VAE (current attention key names) and the override (legacy query/key/value/proj_attn names,
//! config without scaling_factor).

mod encoders_common;

use encoders_common::*;
use headshot_models::vae::{VaeConfig, VaeDecoder};

fn load(folder: &str) -> VaeDecoder {
    let cfg = VaeConfig::from_file(tiny(folder).join("config.json")).unwrap();
    VaeDecoder::load(
        mmap_weights(tiny(folder).join("diffusion_pytorch_model.safetensors")),
        &cfg,
    )
    .unwrap()
}

#[test]
fn decode_matches_diffusers_for_both_attention_key_styles() {
    let g = golden("vae_decode.safetensors");
    for (folder, suffix) in [("sd15/vae", "base"), ("vae-ft-mse", "ft_mse")] {
        let vae = load(folder);
        assert_eq!(vae.scaling_factor(), 0.18215);
        let decoded = vae
            .decode(&(&g["latents"] / vae.scaling_factor()).unwrap())
            .unwrap();
        assert_eq!(decoded.dims(), &[1, 3, 192, 128]);
        assert_close(
            &format!("decoded_{suffix}"),
            &decoded,
            &g[&format!("decoded_{suffix}")],
            1e-4,
        );
        let image = vae
            .decode_to_unit_range(&g["latents"])
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        assert_close(
            &format!("image_{suffix}"),
            &image,
            &g[&format!("image_{suffix}")],
            1e-4,
        );
    }
}

#[test]
fn wrong_latent_channels_are_reported() {
    let g = golden("vae_decode.safetensors");
    let err = load("sd15/vae")
        .decode(&g["latents"].narrow(1, 0, 3).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("[B, 4, h, w]"), "{err}");
}

#[test]
fn unsupported_block_types_are_rejected() {
    let json = r#"{"block_out_channels": [8], "up_block_types": ["AttnUpDecoderBlock2D"], "norm_num_groups": 4}"#;
    let err = VaeConfig::from_json_str(json, std::path::Path::new("vae/config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("AttnUpDecoderBlock2D") && err.contains("vae/config.json"),
        "{err}"
    );
}

#[test]
fn a_batch_decodes_like_its_samples_one_by_one() {
    let vae = load("vae-ft-mse");
    let latents =
        candle_core::Tensor::randn(0f32, 1f32, (2, 4, 12, 8), &candle_core::Device::Cpu).unwrap();
    let both = vae.decode(&latents).unwrap();
    for i in 0..2 {
        let one = vae.decode(&latents.narrow(0, i, 1).unwrap()).unwrap();
        assert_close(
            &format!("sample {i}"),
            &one,
            &both.narrow(0, i, 1).unwrap(),
            1e-5,
        );
    }
}
