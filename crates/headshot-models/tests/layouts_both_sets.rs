//! Both committed fixture sets through the loaders the pipeline uses, each against its own
//! goldens: `tiny/` with `goldens/`, written by diffusers 0.35 / transformers 4.57, and
//! `tiny-current/` with `goldens-current/`, written by diffusers 0.42 / transformers 5.24
//! (tools/fixtures, `--libs current`), whose text encoder has no `text_model.` prefix and whose
//! safety checker tower sits one `vision_model.` level higher.

mod encoders_common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use encoders_common::{assert_close, fixtures, id_rows, mmap_weights, tiny_image_proj};
use headshot_models::clip_text::{ClipTextConfig, ClipTextEncoder};
use headshot_models::clip_vision::{ClipVisionConfig, ClipVisionOutputs, ClipVisionTransformer};
use headshot_models::face_projection::FaceIdPlusProjection;
use headshot_models::ip_adapter::IpAdapterWeights;
use headshot_models::safety_checker::SafetyChecker;
use headshot_models::unet::{IpAdapterAttachment, UNet2DConditionModel, UNetConfig};
use headshot_models::vae::{VaeConfig, VaeDecoder};

struct Set {
    name: &'static str,
    tiny: &'static str,
    goldens: &'static str,
    /// A key of the text encoder file and of the safety checker file in this set's layout.
    text_key: &'static str,
    safety_key: &'static str,
}

const SETS: [Set; 2] = [
    Set {
        name: "transformers 4.57",
        tiny: "tiny",
        goldens: "goldens",
        text_key: "text_model.embeddings.token_embedding.weight",
        safety_key: "vision_model.vision_model.embeddings.patch_embedding.weight",
    },
    Set {
        name: "transformers 5.24",
        tiny: "tiny-current",
        goldens: "goldens-current",
        text_key: "embeddings.token_embedding.weight",
        safety_key: "vision_model.embeddings.patch_embedding.weight",
    },
];

impl Set {
    fn path(&self, rel: &str) -> PathBuf {
        fixtures().join(self.tiny).join(rel)
    }

    fn golden(&self, name: &str) -> HashMap<String, Tensor> {
        let path = fixtures().join(self.goldens).join(name);
        candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("cannot read golden {}: {e}", path.display()))
    }

    fn what(&self, stage: &str) -> String {
        format!("{stage} ({})", self.name)
    }
}

#[test]
fn each_set_has_its_transformers_key_layout() {
    // Guards the fixtures themselves: the loaders below must see both layouts.
    for set in &SETS {
        let text = mmap_weights(set.path("sd15/text_encoder/model.safetensors"));
        assert!(text.contains_tensor(set.text_key), "{}", set.name);
        let safety = mmap_weights(set.path("sd15/safety_checker/model.safetensors"));
        assert!(safety.contains_tensor(set.safety_key), "{}", set.name);
    }
    let current = mmap_weights(SETS[1].path("sd15/text_encoder/model.safetensors"));
    assert!(!current.contains_tensor(SETS[0].text_key));
}

#[test]
fn text_encoder_matches_transformers_in_both_layouts() {
    for set in &SETS {
        let cfg = ClipTextConfig::from_file(set.path("sd15/text_encoder/config.json")).unwrap();
        let encoder = ClipTextEncoder::load(
            mmap_weights(set.path("sd15/text_encoder/model.safetensors")),
            &cfg,
        )
        .unwrap();
        let g = set.golden("text_encoder.safetensors");
        let ids = Tensor::new(id_rows(&g["input_ids"]), &Device::Cpu).unwrap();
        let out = encoder.forward(&ids).unwrap();
        assert_close(
            &set.what("last_hidden_state"),
            &out,
            &g["last_hidden_state"],
            1e-4,
        );
    }
}

#[test]
fn image_encoder_matches_transformers_from_the_file_root() {
    for set in &SETS {
        let cfg = ClipVisionConfig::from_file(set.path("image_encoder/config.json")).unwrap();
        let tower = ClipVisionTransformer::load_from_model_file(
            mmap_weights(set.path("image_encoder/model.safetensors")),
            &cfg,
            ClipVisionOutputs::PenultimateOnly,
        )
        .unwrap();
        let g = set.golden("image_encoder.safetensors");
        let out = tower.penultimate_hidden_states(&g["pixel_values"]).unwrap();
        assert_close(
            &set.what("hidden_states[-2]"),
            &out,
            &g["hidden_states_penultimate"],
            1e-4,
        );
    }
}

#[test]
fn safety_checker_matches_diffusers_in_both_layouts() {
    for set in &SETS {
        let checker =
            SafetyChecker::from_folder(set.path("sd15/safety_checker"), &Device::Cpu, DType::F32)
                .unwrap_or_else(|e| panic!("{}: {e}", set.name));
        let g = set.golden("safety_checker.safetensors");
        let embeds = checker.image_embeds(&g["pixel_values"]).unwrap();
        assert_close(&set.what("image_embeds"), &embeds, &g["image_embeds"], 1e-4);
        let (special, concept) = checker.cosine_similarities(&g["pixel_values"]).unwrap();
        assert_close(&set.what("special_cos"), &special, &g["special_cos"], 1e-4);
        assert_close(&set.what("concept_cos"), &concept, &g["concept_cos"], 1e-4);
        let flags: Vec<u8> = checker
            .check(&g["pixel_values"])
            .unwrap()
            .iter()
            .map(|v| v.nsfw as u8)
            .collect();
        assert_eq!(
            flags,
            g["has_nsfw_concept"].to_vec1::<u8>().unwrap(),
            "{}",
            set.name
        );
        assert!(flags.contains(&1) && flags.contains(&0), "{flags:?}");
    }
}

#[test]
fn safety_checker_from_a_torch_pickle_matches_diffusers() {
    // CompVis/stable-diffusion-safety-checker's main holds `pytorch_model.bin` (transformers 4.x
    // layout); tiny/safety-checker-bin is the tiny checker saved the same way.
    let set = &SETS[0];
    let checker =
        SafetyChecker::from_folder(set.path("safety-checker-bin"), &Device::Cpu, DType::F32)
            .unwrap();
    let g = set.golden("safety_checker.safetensors");
    let (special, concept) = checker.cosine_similarities(&g["pixel_values"]).unwrap();
    assert_close("special_cos (.bin)", &special, &g["special_cos"], 1e-4);
    assert_close("concept_cos (.bin)", &concept, &g["concept_cos"], 1e-4);
}

#[test]
fn face_projection_unet_step_and_vae_match_diffusers_for_both_sets() {
    // Both sets share the adapter file; their UNet and VAE come from each diffusers version.
    let adapter = IpAdapterWeights::load(
        &fixtures().join("tiny/ip-adapter/ip-adapter-faceid-plusv2_sd15.bin"),
    )
    .unwrap();
    let projection = FaceIdPlusProjection::load_inferred(tiny_image_proj(DType::F32)).unwrap();
    for set in &SETS {
        let g = set.golden("face_projection.safetensors");
        let tokens = projection
            .forward(&g["id_embeds"], &g["clip_embeds"], 1.0)
            .unwrap();
        assert_close(&set.what("id_tokens_s1"), &tokens, &g["id_tokens_s1"], 1e-4);

        let g = set.golden("unet_step.safetensors");
        let cfg = UNetConfig::from_file(&set.path("sd15/unet/config.json")).unwrap();
        let attachment = IpAdapterAttachment {
            weights: &adapter,
            num_tokens: 4,
            scale: 1.0,
        };
        let unet = UNet2DConditionModel::load(
            mmap_weights(set.path("sd15/unet/diffusion_pytorch_model.safetensors")),
            &cfg,
            Some(attachment),
        )
        .unwrap();
        let context = Tensor::cat(&[&g["encoder_hidden_states"], &g["id_tokens"]], 1).unwrap();
        let t = g["timestep"]
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let eps = unet.forward(&g["latents"], t, &context).unwrap();
        assert_close(&set.what("noise_pred_ip"), &eps, &g["noise_pred_ip"], 1e-4);

        let g = set.golden("vae_decode.safetensors");
        let cfg = VaeConfig::from_file(set.path("sd15/vae/config.json")).unwrap();
        let vae = VaeDecoder::load(
            mmap_weights(set.path("sd15/vae/diffusion_pytorch_model.safetensors")),
            &cfg,
        )
        .unwrap();
        let decoded = vae
            .decode(&(&g["latents"] / vae.scaling_factor()).unwrap())
            .unwrap();
        assert_close(
            &set.what("decoded_base"),
            &decoded,
            &g["decoded_base"],
            1e-4,
        );
    }
}

#[test]
fn a_file_in_neither_layout_names_the_keys_it_looked_for() {
    // The safety checker file has no text encoder in any layout.
    let cfg = ClipTextConfig::from_file(SETS[1].path("sd15/text_encoder/config.json")).unwrap();
    let err = ClipTextEncoder::load(
        mmap_weights(SETS[1].path("sd15/safety_checker/model.safetensors")),
        &cfg,
    )
    .unwrap_err()
    .to_string();
    for key in [
        "`text_model.embeddings.token_embedding.weight`",
        "`embeddings.token_embedding.weight`",
    ] {
        assert!(err.contains(key), "{err}");
    }
}
