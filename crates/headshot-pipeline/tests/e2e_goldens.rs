//! End to end against diffusers on the tiny model set (CPU, f32): every configuration of
//! tests/fixtures/goldens/e2e_*.safetensors, with the reference's initial latents injected.
//! The final image must be within 2e-3 of diffusers' on [0, 1]; intermediates are checked too.
//! e2e_goldens_half.rs runs them in f16/bf16, e2e_goldens_cuda.rs on a GPU.

mod common;

use common::{check_e2e, tiny, E2eTolerance, E2E_CASES};

fn check_case(name: &str) {
    check_e2e(tiny(), name, &E2eTolerance::F32);
}

#[test]
fn e2e_s1_g7_5_512x512_n1_neg_21() {
    check_case(E2E_CASES[0]);
}

#[test]
fn e2e_s0_g7_5_512x512_n1_neg_21() {
    check_case(E2E_CASES[1]);
}

#[test]
fn e2e_s2_g5_512x512_n1_noneg_21() {
    check_case(E2E_CASES[2]);
}

#[test]
fn e2e_s1_g1_512x512_n1_neg_21_no_cfg() {
    check_case(E2E_CASES[3]);
}

#[test]
fn e2e_s1_g7_5_512x768_n1_neg_21() {
    check_case(E2E_CASES[4]);
}

#[test]
fn e2e_s2_g7_5_512x512_n2_neg_21() {
    check_case(E2E_CASES[5]);
}

#[test]
fn e2e_s0_g1_512x512_n2_noneg_21_no_cfg() {
    check_case(E2E_CASES[6]);
}

#[test]
fn e2e_s1_g5_512x512_n1_neg_31() {
    check_case(E2E_CASES[7]);
}
