//! CLIP vision transformer vs transformers: the FaceID image encoder's hidden_states[-2]
//! (goldens/image_encoder.safetensors) and the safety checker tower's pooled output
//! (goldens/safety_checker.safetensors, a CLIPConfig with vision_config and quick_gelu).

mod encoders_common;

use candle_core::Module;
use encoders_common::*;
use headshot_models::clip_vision::{
    Activation, ClipVisionConfig, ClipVisionOutputs, ClipVisionTransformer,
};

fn image_encoder(outputs: ClipVisionOutputs) -> ClipVisionTransformer {
    let cfg = ClipVisionConfig::from_file(tiny("image_encoder/config.json")).unwrap();
    assert_eq!(cfg.hidden_act, Activation::Gelu);
    let vb = mmap_weights(tiny("image_encoder/model.safetensors"));
    ClipVisionTransformer::load_for(vb.pp("vision_model"), &cfg, outputs).unwrap()
}

#[test]
fn penultimate_hidden_states_match_transformers() {
    let g = golden("image_encoder.safetensors");
    for outputs in [ClipVisionOutputs::All, ClipVisionOutputs::PenultimateOnly] {
        let out = image_encoder(outputs)
            .penultimate_hidden_states(&g["pixel_values"])
            .unwrap();
        assert_eq!(out.dims(), &[2, 257, 96]);
        assert_close(
            "hidden_states[-2]",
            &out,
            &g["hidden_states_penultimate"],
            1e-4,
        );
    }
}

#[test]
fn pooled_output_and_projection_match_transformers() {
    let g = golden("image_encoder.safetensors");
    let cfg = ClipVisionConfig::from_file(tiny("image_encoder/config.json")).unwrap();
    let vb = mmap_weights(tiny("image_encoder/model.safetensors"));
    let tower = ClipVisionTransformer::load(vb.pp("vision_model"), &cfg).unwrap();
    let projection = candle_nn::linear_no_bias(
        cfg.hidden_size,
        cfg.projection_dim,
        vb.pp("visual_projection"),
    )
    .unwrap();
    let embeds = projection
        .forward(&tower.pooled_output(&g["pixel_values"]).unwrap())
        .unwrap();
    assert_close("image_embeds", &embeds, &g["image_embeds"], 1e-4);
}

#[test]
fn penultimate_only_tower_refuses_pooled_output() {
    let g = golden("image_encoder.safetensors");
    let err = image_encoder(ClipVisionOutputs::PenultimateOnly)
        .pooled_output(&g["pixel_values"])
        .unwrap_err();
    assert!(err.to_string().contains("ClipVisionOutputs::All"), "{err}");
}

#[test]
fn safety_checker_tower_from_clip_config_gives_the_pooled_output() {
    let g = golden("safety_checker.safetensors");
    let cfg = ClipVisionConfig::from_file(tiny("sd15/safety_checker/config.json")).unwrap();
    assert_eq!(cfg.hidden_act, Activation::QuickGelu);
    assert_eq!(cfg.hidden_size, 32);
    let vb = mmap_weights(tiny("sd15/safety_checker/model.safetensors"));
    let tower = ClipVisionTransformer::load(vb.pp("vision_model.vision_model"), &cfg).unwrap();
    let pooled = tower.pooled_output(&g["pixel_values"]).unwrap();
    assert_close("pooled_output", &pooled, &g["pooled_output"], 1e-4);
}

#[test]
fn wrong_pixel_shape_is_an_error_naming_the_expected_shape() {
    let g = golden("image_encoder.safetensors");
    let pixels = g["pixel_values"].narrow(2, 0, 112).unwrap();
    let err = image_encoder(ClipVisionOutputs::All)
        .penultimate_hidden_states(&pixels)
        .unwrap_err();
    assert!(err.to_string().contains("[B, 3, 224, 224]"), "{err}");
}

#[test]
fn legacy_vision_config_dict_entries_override_vision_config() {
    // Older CLIPConfig files carry `vision_config_dict`; transformers merges it over `vision_config`.
    let json = r#"{"vision_config": {"hidden_size": 1280, "num_hidden_layers": 32, "num_attention_heads": 16,
        "patch_size": 14, "intermediate_size": 5120},
        "vision_config_dict": {"hidden_act": "gelu", "num_hidden_layers": 32}}"#;
    let cfg = ClipVisionConfig::from_json_str(json, std::path::Path::new("config.json")).unwrap();
    assert_eq!(cfg.hidden_act, Activation::Gelu);
    assert_eq!(
        (cfg.hidden_size, cfg.num_hidden_layers, cfg.patch_size),
        (1280, 32, 14)
    );
}
