//! Shared helpers of the `encoders_*` tests: fixture paths, golden loading, tolerant comparison.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn tiny(rel: &str) -> PathBuf {
    fixtures().join("tiny").join(rel)
}

pub fn golden(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join("goldens").join(name);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read golden {}: {e}", path.display()))
}

/// The string metadata of a golden file (`__metadata__` in the safetensors JSON header).
pub fn golden_metadata(name: &str) -> HashMap<String, String> {
    let path = fixtures().join("goldens").join(name);
    let bytes = std::fs::read(&path).expect("golden file");
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + len]).expect("safetensors header");
    header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn mmap_weights(path: PathBuf) -> VarBuilder<'static> {
    // SAFETY: the committed fixture files are not modified while the tests run.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }
        .expect("weights file")
}

/// The tiny adapter's `image_proj` weights in `dtype`, read the way the pipeline reads them.
pub fn tiny_image_proj(dtype: DType) -> VarBuilder<'static> {
    headshot_models::ip_adapter::IpAdapterWeights::load(&tiny(
        "ip-adapter/ip-adapter-faceid-plusv2_sd15.bin",
    ))
    .expect("tiny adapter")
    .image_proj_var_builder(dtype, &Device::Cpu)
}

pub use headshot_test_support::tensors::{max_abs, max_abs_diff};

/// Asserts `got` matches `want` to `rel` relative to the golden's magnitude (at least 1).
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    let diff = max_abs_diff(got, want);
    let scale = max_abs(want).max(1.0);
    assert!(
        diff <= rel * scale,
        "{what}: max abs diff {diff:e} exceeds {rel:e} x magnitude {scale}"
    );
}

/// Token ids golden rows (int64) as u32.
pub fn id_rows(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|x| x as u32).collect())
        .collect()
}
