//! The end-to-end goldens in f16 on the CPU, against diffusers in f32: the weights and
//! activations a GPU runs in, through the same model code (bf16 runs on CUDA only: candle's CPU
//! ops have no bf16 matmul; e2e_goldens_cuda.rs covers it).

mod common;

use common::{check_e2e, tiny_on, E2eTolerance, E2E_CASES};
use headshot_pipeline::{DTypeSpec, DeviceSpec};

#[test]
fn e2e_goldens_in_f16() {
    let pipeline = tiny_on(DeviceSpec::Cpu, DTypeSpec::F16).expect("tiny pipeline in f16");
    // One CFG case with a negative prompt and one with two samples and no CFG.
    for name in [E2E_CASES[0], E2E_CASES[6]] {
        check_e2e(&pipeline, name, &E2eTolerance::F16);
    }
}
