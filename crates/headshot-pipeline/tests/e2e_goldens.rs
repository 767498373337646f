//! End to end against diffusers on the tiny model set (CPU, f32): every configuration of
//! tests/fixtures/goldens/e2e_*.safetensors, with the reference's initial latents injected.
//! The final image must be within 2e-3 of diffusers' on [0, 1]; intermediates are checked too.

mod common;

use common::{max_abs_diff, tiny, Golden, E2E_CASES};

/// Final image tolerance on [0, 1] (the goldens store it as f16: <= 2.5e-4 of that is rounding).
const IMAGE_TOL: f32 = 2e-3;

fn check_case(name: &str) {
    let pipeline = tiny();
    let golden = Golden::read(name);
    let request = golden.e2e_request();
    let face = golden.e2e_face();
    let out = pipeline
        .render(&request, &face)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let trace = &out.trace;

    let text = max_abs_diff(&trace.prompt_embeds, golden.tensor("prompt_embeds"));
    let negative = match (
        &trace.negative_prompt_embeds,
        golden.tensors.get("negative_prompt_embeds"),
    ) {
        (Some(ours), Some(theirs)) => max_abs_diff(ours, theirs),
        (None, None) => 0.0,
        (ours, theirs) => panic!(
            "{name}: negative embeddings present: ours {}, golden {}",
            ours.is_some(),
            theirs.is_some()
        ),
    };
    let id_tokens = max_abs_diff(&trace.id_tokens, golden.tensor("id_tokens"));
    let step0 = max_abs_diff(
        &trace.latents_after_step0,
        golden.tensor("latents_after_step0"),
    );
    let final_latents = max_abs_diff(&trace.final_latents, golden.tensor("final_latents"));
    let image = max_abs_diff(&trace.image, golden.tensor("image"));
    println!(
        "{name}: text {text:.2e} negative {negative:.2e} id_tokens {id_tokens:.2e} step0 {step0:.2e} \
         final_latents {final_latents:.2e} image {image:.2e}"
    );
    assert!(text < 1e-4, "{name}: prompt embeddings differ by {text}");
    assert!(
        negative < 1e-4,
        "{name}: negative prompt embeddings differ by {negative}"
    );
    assert!(id_tokens < 1e-4, "{name}: id tokens differ by {id_tokens}");
    assert!(
        step0 < 1e-4,
        "{name}: latents after the first step differ by {step0}"
    );
    assert!(
        final_latents < 2e-3,
        "{name}: final latents differ by {final_latents}"
    );
    assert!(
        image <= IMAGE_TOL,
        "{name}: final image differs by {image} (> {IMAGE_TOL})"
    );

    // The 8-bit images are the float image quantised.
    assert_eq!(out.images.len(), request.samples as usize);
    for img in &out.images {
        assert_eq!(
            (img.image.width, img.image.height),
            (request.width, request.height)
        );
        assert!(!img.nsfw);
    }
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
