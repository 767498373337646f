//! FaceID-PlusV2 projection vs diffusers' IPAdapterFaceIDPlusImageProjection
//! (goldens/face_projection.safetensors), read from the adapter .bin in h94's layout.

mod encoders_common;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use encoders_common::*;
use headshot_models::face_projection::{FaceIdPlusConfig, FaceIdPlusProjection};

fn image_proj() -> VarBuilder<'static> {
    let path = tiny("ip-adapter/ip-adapter-faceid-plusv2_sd15.bin");
    let tensors = candle_core::pickle::read_all_with_key(&path, Some("image_proj")).unwrap();
    VarBuilder::from_tensors(tensors.into_iter().collect(), DType::F32, &Device::Cpu)
}

#[test]
fn sizes_are_derived_from_the_weights() {
    let cfg = FaceIdPlusConfig::from_weights(&image_proj()).unwrap();
    let want = FaceIdPlusConfig {
        id_embedding_dim: 512,
        id_hidden_dim: 1024,
        num_tokens: 4,
        embed_dim: 64,
        clip_embedding_dim: 96,
        output_dim: 64,
        depth: 4,
        heads: 1,
        ff_inner_dim: 256,
    };
    assert_eq!(cfg, want);
}

#[test]
fn id_tokens_match_diffusers_for_each_s_scale() {
    let g = golden("face_projection.safetensors");
    let projection = FaceIdPlusProjection::load_inferred(image_proj()).unwrap();
    for (s_scale, key) in [
        (0.0, "id_tokens_s0"),
        (1.0, "id_tokens_s1"),
        (2.0, "id_tokens_s2"),
    ] {
        let out = projection
            .forward(&g["id_embeds"], &g["clip_embeds"], s_scale)
            .unwrap();
        assert_eq!(out.dims(), &[2, 4, 64]);
        assert_close(key, &out, &g[key], 1e-4);
    }
    let (_, resampled) = projection
        .forward_parts(&g["id_embeds"], &g["clip_embeds"])
        .unwrap();
    assert_close("resampler_out", &resampled, &g["resampler_out"], 1e-4);
}

#[test]
fn a_file_without_the_resampler_is_rejected_with_the_missing_key() {
    let empty = VarBuilder::from_tensors(Default::default(), DType::F32, &Device::Cpu);
    let err = FaceIdPlusConfig::from_weights(&empty)
        .unwrap_err()
        .to_string();
    assert!(err.contains("proj.0.weight"), "{err}");
}
