//! The tiny set as the current releases save it (models/tiny-current.toml: diffusers 0.42.1 /
//! transformers 5.24.0, text encoder without `text_model.`, safety tower under one
//! `vision_model.`) loads through the manifest like any set, and a whole run matches diffusers
//! on it (tests/fixtures/goldens-current).

mod common;

use common::{check_e2e_in, workspace, E2eTolerance};
use headshot_pipeline::{DTypeSpec, DeviceSpec, Pipeline, PipelineConfig};

fn current_set() -> Pipeline {
    let mut config = PipelineConfig::new(workspace().join("models/tiny-current.toml"));
    config.device = DeviceSpec::Cpu;
    config.dtype = DTypeSpec::F32;
    config.load_face_analyzer = false;
    config.load_safety_checker = true;
    config.resolve.allow_download = false;
    config.resolve.progress = false;
    Pipeline::load(&config).unwrap_or_else(|e| panic!("loading models/tiny-current.toml: {e}"))
}

#[test]
fn the_current_libraries_set_loads_and_matches_diffusers_end_to_end() {
    let pipeline = current_set();
    check_e2e_in(
        &pipeline,
        &workspace().join("tests/fixtures/goldens-current"),
        "e2e_s1_g7.5_512x512_n1_neg_21",
        &E2eTolerance::F32,
    );
}
