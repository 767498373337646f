//! The encoders in f16 (the CUDA/Metal dtype), run on CPU: same code paths, loose tolerance.
//! Guards the dtype handling (masks, f32 softmax, activation constants, VAE attention).

mod encoders_common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use encoders_common::*;
use headshot_models::clip_text::{ClipTextConfig, ClipTextEncoder};
use headshot_models::clip_vision::{ClipVisionConfig, ClipVisionOutputs, ClipVisionTransformer};
use headshot_models::face_projection::FaceIdPlusProjection;
use headshot_models::vae::{VaeConfig, VaeDecoder};

fn half(rel: &str) -> VarBuilder<'static> {
    // SAFETY: the committed fixture files are not modified while the tests run.
    unsafe { VarBuilder::from_mmaped_safetensors(&[tiny(rel)], DType::F16, &Device::Cpu) }
        .expect("weights")
}

/// f16 keeps ~3 significant digits; compare relative to the golden's magnitude.
const F16_TOLERANCE: f32 = 2e-2;

#[test]
fn text_encoder_in_f16_tracks_the_f32_golden() {
    let g = golden("text_encoder.safetensors");
    let cfg = ClipTextConfig::from_file(tiny("sd15/text_encoder/config.json")).unwrap();
    let encoder = ClipTextEncoder::load(half("sd15/text_encoder/model.safetensors"), &cfg).unwrap();
    let ids = Tensor::new(id_rows(&g["input_ids"]), &Device::Cpu).unwrap();
    let out = encoder.forward(&ids).unwrap();
    assert_eq!(out.dtype(), DType::F16);
    assert_close(
        "f16 last_hidden_state",
        &out,
        &g["last_hidden_state"],
        F16_TOLERANCE,
    );
}

#[test]
fn image_encoder_and_projection_in_f16_track_the_f32_goldens() {
    let g = golden("image_encoder.safetensors");
    let cfg = ClipVisionConfig::from_file(tiny("image_encoder/config.json")).unwrap();
    let tower = ClipVisionTransformer::load_for(
        half("image_encoder/model.safetensors").pp("vision_model"),
        &cfg,
        ClipVisionOutputs::PenultimateOnly,
    )
    .unwrap();
    let pixels = g["pixel_values"].to_dtype(DType::F16).unwrap();
    let hidden = tower.penultimate_hidden_states(&pixels).unwrap();
    assert_close(
        "f16 hidden_states[-2]",
        &hidden,
        &g["hidden_states_penultimate"],
        F16_TOLERANCE,
    );

    let p = golden("face_projection.safetensors");
    let projection = FaceIdPlusProjection::load_inferred(tiny_image_proj(DType::F16)).unwrap();
    let out = projection
        .forward(
            &p["id_embeds"].to_dtype(DType::F16).unwrap(),
            &p["clip_embeds"].to_dtype(DType::F16).unwrap(),
            1.0,
        )
        .unwrap();
    assert_eq!(out.dtype(), DType::F16);
    assert_close("f16 id_tokens_s1", &out, &p["id_tokens_s1"], F16_TOLERANCE);
}

#[test]
fn vae_decode_in_f16_tracks_the_f32_golden() {
    let g = golden("vae_decode.safetensors");
    let cfg = VaeConfig::from_file(tiny("sd15/vae/config.json")).unwrap();
    let vae = VaeDecoder::load(half("sd15/vae/diffusion_pytorch_model.safetensors"), &cfg).unwrap();
    let latents = g["latents"].to_dtype(DType::F16).unwrap();
    let image = vae
        .decode_to_unit_range(&latents)
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap();
    assert_close("f16 image_base", &image, &g["image_base"], F16_TOLERANCE);
}
