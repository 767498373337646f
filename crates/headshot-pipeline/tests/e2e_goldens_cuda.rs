//! The end-to-end goldens on CUDA device 0 (build with `--features cuda`): every case in f32
//! against the same bounds as the CPU (e2e_goldens.rs), and in f16/bf16 against the half
//! precision bounds of e2e_goldens_half.rs. On a machine without a usable GPU each test prints
//! that it skipped, loudly, and passes: the CPU tests cover the logic, this covers the kernels.

#![cfg(feature = "cuda")]

mod common;

use common::{check_e2e, tiny_on, E2eTolerance, E2E_CASES};
use headshot_pipeline::{DTypeSpec, DeviceSpec, Pipeline};

fn on_gpu(dtype: DTypeSpec) -> Option<Pipeline> {
    match tiny_on(DeviceSpec::Cuda(0), dtype) {
        Ok(pipeline) => Some(pipeline),
        Err(e) => {
            eprintln!(
                "\n*** SKIPPED: no usable CUDA device for the {dtype} GPU goldens: {e} ***\n"
            );
            None
        }
    }
}

fn run(dtype: DTypeSpec, tol: &E2eTolerance) {
    let Some(pipeline) = on_gpu(dtype) else {
        return;
    };
    for name in E2E_CASES {
        check_e2e(&pipeline, name, tol);
    }
}

#[test]
fn e2e_goldens_on_cuda_f32() {
    run(DTypeSpec::F32, &E2eTolerance::F32);
}

#[test]
fn e2e_goldens_on_cuda_f16() {
    run(DTypeSpec::F16, &E2eTolerance::F16);
}

#[test]
fn e2e_goldens_on_cuda_bf16() {
    run(DTypeSpec::BF16, &E2eTolerance::BF16);
}
