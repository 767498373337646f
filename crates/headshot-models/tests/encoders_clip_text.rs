//! SD1.5 text encoder vs transformers' CLIPTextModel (goldens/text_encoder.safetensors).

mod encoders_common;

use candle_core::{Device, Tensor};
use encoders_common::*;
use headshot_models::clip_text::{ClipTextConfig, ClipTextEncoder};
use headshot_models::tokenizer::ClipTokenizer;

fn load() -> ClipTextEncoder {
    let cfg = ClipTextConfig::from_file(tiny("sd15/text_encoder/config.json")).unwrap();
    ClipTextEncoder::load(
        mmap_weights(tiny("sd15/text_encoder/model.safetensors")),
        &cfg,
    )
    .unwrap()
}

#[test]
fn last_hidden_state_matches_transformers() {
    let g = golden("text_encoder.safetensors");
    let ids = Tensor::new(id_rows(&g["input_ids"]), &Device::Cpu).unwrap();
    let out = load().forward(&ids).unwrap();
    assert_close("last_hidden_state", &out, &g["last_hidden_state"], 1e-4);
}

#[test]
fn tokenizer_and_encoder_reproduce_the_pipeline_prompt_embeddings() {
    // The e2e run's prompt_embeds / negative_prompt_embeds from the prompts in its metadata.
    let name = "e2e_s1_g7.5_512x512_n1_neg_21.safetensors";
    let meta = golden_metadata(name);
    let g = golden(name);
    let tok = ClipTokenizer::from_folder(tiny("sd15/tokenizer")).unwrap();
    let ids = Tensor::new(
        vec![
            tok.encode(&meta["prompt"]).unwrap(),
            tok.encode(&meta["negative_prompt"]).unwrap(),
        ],
        &Device::Cpu,
    )
    .unwrap();
    let out = load().forward(&ids).unwrap();
    assert_close(
        "prompt_embeds",
        &out.narrow(0, 0, 1).unwrap(),
        &g["prompt_embeds"],
        1e-4,
    );
    assert_close(
        "negative_prompt_embeds",
        &out.narrow(0, 1, 1).unwrap(),
        &g["negative_prompt_embeds"],
        1e-4,
    );
}

#[test]
fn config_keeps_the_activation_and_sizes() {
    let cfg = ClipTextConfig::from_file(tiny("sd15/text_encoder/config.json")).unwrap();
    assert_eq!(
        cfg.hidden_act,
        headshot_models::clip_vision::Activation::QuickGelu
    );
    assert_eq!(
        (
            cfg.hidden_size,
            cfg.num_hidden_layers,
            cfg.max_position_embeddings
        ),
        (64, 3, 77)
    );
}
