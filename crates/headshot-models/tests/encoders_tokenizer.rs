//! CLIP tokenizer vs transformers' CLIPTokenizer (goldens/tokenizer.safetensors): ids exact.

mod encoders_common;

use encoders_common::*;
use headshot_models::tokenizer::ClipTokenizer;

fn golden_prompts() -> (Vec<String>, Vec<Vec<u32>>) {
    let meta = golden_metadata("tokenizer.safetensors");
    let prompts: Vec<String> = serde_json::from_str(&meta["prompts"]).expect("prompts metadata");
    let ids = id_rows(&golden("tokenizer.safetensors")["input_ids"]);
    assert_eq!(prompts.len(), ids.len());
    (prompts, ids)
}

#[test]
fn vocab_and_merges_folder_matches_transformers_exactly() {
    let tok = ClipTokenizer::from_folder(tiny("sd15/tokenizer")).unwrap();
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id(), tok.max_length()),
        (49406, 49407, 49407, 77)
    );
    let (prompts, want) = golden_prompts();
    for (prompt, want) in prompts.iter().zip(&want) {
        assert_eq!(&tok.encode(prompt).unwrap(), want, "prompt {prompt:?}");
    }
}

#[test]
fn tokenizer_json_gives_the_same_ids() {
    // A folder holding a tokenizers-library file (plus the same special-token settings).
    let dir = std::env::temp_dir().join(format!("headshot-tokenizer-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(tiny("clip-tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    for f in ["tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(tiny("sd15/tokenizer").join(f), dir.join(f)).unwrap();
    }
    let tok = ClipTokenizer::from_folder(&dir).unwrap();
    let (prompts, want) = golden_prompts();
    for (prompt, want) in prompts.iter().zip(&want) {
        assert_eq!(&tok.encode(prompt).unwrap(), want, "prompt {prompt:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn long_prompts_are_truncated_to_bos_75_tokens_eos() {
    let tok = ClipTokenizer::from_folder(tiny("sd15/tokenizer")).unwrap();
    let ids = tok.encode(&"portrait ".repeat(200)).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], 49406);
    assert_eq!(ids[76], 49407);
    assert!(ids[1..76].iter().all(|&t| t == ids[1] && t != 49407));
}

#[test]
fn missing_files_are_reported_with_the_folder() {
    let err = ClipTokenizer::from_folder(tiny("sd15/vae"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("vocab.json") && err.contains("sd15/vae"),
        "{err}"
    );
}
