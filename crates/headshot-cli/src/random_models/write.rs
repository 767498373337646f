//! Drawing each tensor's values (deterministic from the seed and the tensor's name, whatever the
//! thread count) and streaming them into a `.safetensors` file.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::schema::{Init, Spec, SILU_MEAN};

/// Element type of the written files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FileDtype {
    F16,
    F32,
}

impl FileDtype {
    fn name(self) -> &'static str {
        match self {
            FileDtype::F16 => "F16",
            FileDtype::F32 => "F32",
        }
    }

    fn size(self) -> usize {
        match self {
            FileDtype::F16 => 2,
            FileDtype::F32 => 4,
        }
    }

    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            FileDtype::F16 => values
                .iter()
                .flat_map(|v| f16_bits(*v).to_le_bytes())
                .collect(),
            FileDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// IEEE binary16 bits of `v`, rounded to nearest even (what torch's `.half()` does); values
/// beyond the f16 range become infinities, NaN stays NaN.
pub(crate) fn f16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let exp = ((x >> 23) & 0xff) as i32;
    let man = x & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal (or zero): shift the mantissa with its implicit bit into place.
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1 << shift) - 1);
        let mut out = m >> shift;
        if rest > half || (rest == half && out & 1 == 1) {
            out += 1;
        }
        return sign | out as u16;
    }
    let mut out = ((e as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && out & 1 == 1) {
        out += 1; // may carry into the exponent, which is still correct (up to infinity)
    }
    sign | out as u16
}

/// Elements drawn from one random stream; blocks are independent, so they fill in parallel.
const BLOCK: usize = 1 << 16;

/// FNV-1a: a stable 64-bit key for a tensor name (std's hasher is not stable across releases).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn normal(key: u64, len: usize, mean: f64, std: f64) -> Vec<f32> {
    let mut values = vec![0f32; len];
    values
        .par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(block, chunk)| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(key ^ (block as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for v in chunk {
                let z: f64 = StandardNormal.sample(&mut rng);
                *v = (mean + std * z) as f32;
            }
        });
    values
}

/// The values of every spec of one file, in the spec order.
pub fn draw(seed: u64, file: &str, specs: &[Spec]) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = Vec::with_capacity(specs.len());
    let mut index: HashMap<&str, usize> = HashMap::new();
    for spec in specs {
        let key = seed ^ fnv1a(&format!("{file}/{}", spec.name));
        let values = match &spec.init {
            Init::FanIn(fan_in) => {
                normal(key, spec.numel(), 0.0, (3.0 * *fan_in as f64).powf(-0.5))
            }
            Init::Normal { mean, std } => normal(key, spec.numel(), *mean, *std),
            Init::CentredBias { weight } => {
                let w = &out[index[weight.as_str()]];
                let per_channel = w.len() / spec.numel();
                w.chunks(per_channel)
                    .map(|c| (-SILU_MEAN * c.iter().map(|v| *v as f64).sum::<f64>()) as f32)
                    .collect()
            }
        };
        index.insert(&spec.name, out.len());
        out.push(values);
    }
    out
}

/// Writes `specs` (values drawn from `seed`) as one safetensors file, tensors in name order
/// like the safetensors library writes them.
pub fn write_safetensors(
    path: &Path,
    seed: u64,
    file: &str,
    specs: &[Spec],
    dtype: FileDtype,
) -> Result<()> {
    let values = draw(seed, file, specs);
    let mut order: Vec<usize> = (0..specs.len()).collect();
    order.sort_by(|a, b| specs[*a].name.cmp(&specs[*b].name));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for &i in &order {
        let bytes = specs[i].numel() * dtype.size();
        header.insert(
            specs[i].name.clone(),
            serde_json::json!({
                "dtype": dtype.name(),
                "shape": specs[i].shape,
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    }
    let mut text = serde_json::to_vec(&header)?;
    text.resize(text.len().div_ceil(8) * 8, b' ');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file_handle =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 22, file_handle);
    w.write_all(&(text.len() as u64).to_le_bytes())?;
    w.write_all(&text)?;
    for &i in &order {
        w.write_all(&dtype.encode(&values[i]))?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
