//! The encoder half of every end-to-end golden run (goldens/e2e_*.safetensors): CLIP features of
//! the face and of the all-zero unconditional pixels, the id tokens in the UNet's batch order
//! for the run's s_scale, and the final VAE decode of the run's last latents. (The e2e files do
//! not store `clip_pixel_values`, although the goldens README lists it; the face pixels come
//! from goldens/image_encoder.safetensors.)

mod encoders_common;

use candle_core::{DType, Tensor};
use encoders_common::*;
use headshot_models::clip_vision::{ClipVisionConfig, ClipVisionOutputs, ClipVisionTransformer};
use headshot_models::face_projection::FaceIdPlusProjection;
use headshot_models::vae::{VaeConfig, VaeDecoder};

fn e2e_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures().join("goldens"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("e2e_") && n.ends_with(".safetensors"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no e2e goldens found");
    names
}

#[test]
fn clip_features_and_id_tokens_match_every_run() {
    let cfg = ClipVisionConfig::from_file(tiny("image_encoder/config.json")).unwrap();
    let vb = mmap_weights(tiny("image_encoder/model.safetensors"));
    let tower = ClipVisionTransformer::load_for(
        vb.pp("vision_model"),
        &cfg,
        ClipVisionOutputs::PenultimateOnly,
    )
    .unwrap();
    let projection = FaceIdPlusProjection::load_inferred(tiny_image_proj(DType::F32)).unwrap();

    // The runs share the face of goldens/image_encoder (row 0: face, row 1: zero pixels); their
    // clip_embeds are [uncond, cond].
    let pixels = golden("image_encoder.safetensors")["pixel_values"].clone();
    let face_then_zero = tower.penultimate_hidden_states(&pixels).unwrap();
    let clip = Tensor::cat(
        &[
            face_then_zero.narrow(0, 1, 1).unwrap(),
            face_then_zero.narrow(0, 0, 1).unwrap(),
        ],
        0,
    )
    .unwrap();
    for name in e2e_files() {
        let g = golden(&name);
        let meta = golden_metadata(&name);
        let s_scale: f64 = meta["s_scale"].parse().unwrap();
        let samples: usize = meta["samples"].parse().unwrap();
        let cfg_on = meta["cfg"] == "true";

        assert_close(
            &format!("{name}: clip_embeds"),
            &clip,
            &g["clip_embeds"],
            1e-4,
        );

        // The UNet batch: [uncond x n, cond x n] under CFG, [cond x n] without.
        let id = &g["id_embeds"];
        let (uncond_clip, cond_clip) =
            (clip.narrow(0, 0, 1).unwrap(), clip.narrow(0, 1, 1).unwrap());
        let mut ids = Vec::new();
        let mut clips = Vec::new();
        if cfg_on {
            for _ in 0..samples {
                ids.push(id.zeros_like().unwrap());
                clips.push(uncond_clip.clone());
            }
        }
        for _ in 0..samples {
            ids.push(id.clone());
            clips.push(cond_clip.clone());
        }
        let tokens = projection
            .forward(
                &Tensor::cat(&ids, 0).unwrap(),
                &Tensor::cat(&clips, 0).unwrap(),
                s_scale,
            )
            .unwrap();
        assert_close(
            &format!("{name}: id_tokens"),
            &tokens,
            &g["id_tokens"],
            1e-4,
        );
    }
}

#[test]
fn decoding_the_final_latents_gives_the_pipeline_image() {
    let cfg = VaeConfig::from_file(tiny("vae-ft-mse/config.json")).unwrap();
    let vae = VaeDecoder::load(
        mmap_weights(tiny("vae-ft-mse/diffusion_pytorch_model.safetensors")),
        &cfg,
    )
    .unwrap();
    // Two runs cover both sizes and batch 2; the image golden is f16 (rounding <= 2.5e-4).
    for name in [
        "e2e_s1_g7.5_512x768_n1_neg_21.safetensors",
        "e2e_s2_g7.5_512x512_n2_neg_21.safetensors",
    ] {
        let g = golden(name);
        let image = vae
            .decode_to_unit_range(&g["final_latents"])
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        let diff = max_abs_diff(&image, &g["image"]);
        assert!(diff <= 1e-3, "{name}: image differs by {diff:e}");
    }
}
