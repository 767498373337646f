//! The single-file checkpoint fixtures, rebuilt: tools/fixtures/gen_single_file.py writes LDM
//! layout files from tests/fixtures/tiny/sd15 and commits only their description
//! (`tests/fixtures/tiny/single-file/ldm_layout.json`: each LDM key's source tensor, each
//! variant's rules and the sha256 of the file it wrote). `build` applies the same rules to the
//! same tensors and checks the sha256, so a test loads the very bytes diffusers was run on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::View;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::workspace;

/// The folder of the description and the committed `.ckpt`.
pub fn fixture_dir() -> PathBuf {
    workspace().join("tests/fixtures/tiny/single-file")
}

/// The description, parsed.
pub fn description() -> Value {
    let path = fixture_dir().join("ldm_layout.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const TEXT_PREFIX: &str = "cond_stage_model.transformer.";

/// The tensors of variant `name` (e.g. "fp32", "fp16", "fp32-ema-both"), by LDM key.
pub fn variant_tensors(name: &str) -> Vec<(String, Tensor)> {
    let desc = description();
    let variant = &desc["variants"][name];
    assert!(variant.is_object(), "ldm_layout.json has no variant {name}");
    let dtype = match variant["dtype"].as_str() {
        Some("F16") => DType::F16,
        Some("F32") => DType::F32,
        other => panic!("variant {name}: dtype {other:?}"),
    };
    let ema = variant["ema"].as_str().expect("ema rule");
    let legacy_text = variant["text"].as_str() == Some("legacy");
    let sd15 = workspace().join("tests/fixtures/tiny/sd15");
    let sources: HashMap<String, HashMap<String, Tensor>> = desc["sources"]
        .as_object()
        .expect("sources")
        .iter()
        .map(|(part, file)| {
            let path = sd15.join(file.as_str().expect("source file"));
            let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (part.clone(), tensors)
        })
        .collect();
    let mut out = Vec::new();
    for row in desc["tensors"].as_array().expect("tensors") {
        let (mut ldm, part, key, conv) = (
            row[0].as_str().expect("ldm key").to_string(),
            row[1].as_str().expect("part"),
            row[2].as_str().expect("source key"),
            row[3].as_bool().expect("conv flag"),
        );
        let mut t = sources[part][key].clone();
        if conv {
            t = t.unsqueeze(2).unwrap().unsqueeze(3).unwrap();
        }
        if part == "text_encoder" && legacy_text {
            let rest = ldm
                .strip_prefix(&format!("{TEXT_PREFIX}text_model."))
                .expect("a text_model key")
                .to_string();
            ldm = format!("{TEXT_PREFIX}{rest}");
        }
        if part == "unet" && ema == "both" {
            out.push((
                flat_ema_key(&ldm),
                t.neg().unwrap().to_dtype(dtype).unwrap(),
            ));
        }
        if part == "unet" && ema == "only" {
            ldm = flat_ema_key(&ldm);
        }
        out.push((ldm, t.to_dtype(dtype).unwrap()));
    }
    out
}

fn flat_ema_key(ldm: &str) -> String {
    // CompVis' LitEma names its buffers after the parameter with the dots removed.
    let under_model = ldm.strip_prefix("model.").expect("a model. key");
    format!("model_ema.{}", under_model.replace('.', ""))
}

/// Writes variant `name` into `dir` (the generator's byte format: keys sorted, sorted compact
/// JSON header padded to 8 bytes) and checks it is the file the generator wrote.
pub fn build(name: &str, dir: &Path) -> PathBuf {
    let tensors = variant_tensors(name);
    let bytes = canonical_safetensors(tensors);
    let expected = description()["variants"][name]["sha256"]
        .as_str()
        .expect("sha256")
        .to_string();
    let actual = hex(&Sha256::digest(&bytes));
    assert_eq!(
        actual, expected,
        "the rebuilt {name} checkpoint differs from the one tools/fixtures/gen_single_file.py wrote"
    );
    // Written aside, then renamed: a reader never sees half a file.
    let path = dir.join(format!("{name}.safetensors"));
    let partial = dir.join(format!(".{name}.safetensors.partial"));
    std::fs::write(&partial, bytes).unwrap_or_else(|e| panic!("{}: {e}", partial.display()));
    std::fs::rename(&partial, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

fn canonical_safetensors(mut tensors: Vec<(String, Tensor)>) -> Vec<u8> {
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (key, t) in &tensors {
        let bytes = t.data();
        let dtype = match t.dtype() {
            DType::F32 => "F32",
            DType::F16 => "F16",
            other => panic!("{key}: dtype {other:?}"),
        };
        let entry = serde_json::json!({
            "data_offsets": [data.len(), data.len() + bytes.len()],
            "dtype": dtype,
            "shape": t.dims(),
        });
        header.insert(key.clone(), entry);
        data.extend_from_slice(&bytes);
    }
    // serde_json's Map keeps keys sorted (no `preserve_order`), like json.dumps(sort_keys=True).
    let mut text = serde_json::to_vec(&header).expect("header");
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&data);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
