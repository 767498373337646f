//! DDIM scheduler vs diffusers' DDIMScheduler: the demo's configuration from the committed
//! goldens (goldens/ddim.safetensors), other spacings and prediction types against values
//! printed by diffusers 0.35.2 (`DDIMScheduler(...).set_timesteps(n)` / `.step(...)`).

mod encoders_common;

use candle_core::{Device, Tensor};
use encoders_common::*;
use headshot_models::ddim::{DdimConfig, DdimScheduler, TimestepSpacing};

fn sd15_scheduler() -> DdimScheduler {
    let json = std::fs::read_to_string(tiny("sd15/scheduler/scheduler_config.json")).unwrap();
    DdimScheduler::from_config_json(&json).unwrap()
}

fn as_usize(t: &Tensor) -> Vec<usize> {
    t.to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as usize)
        .collect()
}

#[test]
fn folder_config_equals_the_demo_scheduler() {
    let from_folder = sd15_scheduler();
    let demo = DdimScheduler::new(DdimConfig::sd15_reference()).unwrap();
    assert_eq!(from_folder.alphas_cumprod(), demo.alphas_cumprod());
    assert!(!from_folder.config().clip_sample && !from_folder.config().set_alpha_to_one);
    assert_eq!(from_folder.config().steps_offset, 1);
}

#[test]
fn timesteps_for_21_31_41_steps_match_diffusers() {
    let g = golden("ddim.safetensors");
    let mut s = sd15_scheduler();
    for n in [21, 31, 41] {
        assert_eq!(
            s.set_timesteps(n).unwrap(),
            as_usize(&g[&format!("timesteps_{n}")]),
            "{n} steps"
        );
        assert_eq!(s.timesteps().len(), n);
    }
}

#[test]
fn alphas_cumprod_match_torch() {
    let g = golden("ddim.safetensors");
    let want = g["alphas_cumprod"].to_vec1::<f32>().unwrap();
    let got = sd15_scheduler().alphas_cumprod().to_vec();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-6, "alphas_cumprod differ by {worst:e}");
}

#[test]
fn steps_match_diffusers_including_the_final_one() {
    let g = golden("ddim.safetensors");
    let mut s = sd15_scheduler();
    s.set_timesteps(21).unwrap();
    for t in [941usize, 471, 1] {
        let prev = s.step(&g["model_output"], t, &g["sample"]).unwrap();
        assert_close(
            &format!("prev_sample_t{t}"),
            &prev,
            &g[&format!("prev_sample_t{t}")],
            1e-5,
        );
    }
}

#[test]
fn trailing_and_linspace_spacings_match_diffusers() {
    let mut cfg = DdimConfig::sd15_reference();
    cfg.timestep_spacing = TimestepSpacing::Trailing;
    let mut s = DdimScheduler::new(cfg.clone()).unwrap();
    assert_eq!(
        s.set_timesteps(21).unwrap(),
        [
            999, 951, 904, 856, 809, 761, 713, 666, 618, 570, 523, 475, 428, 380, 332, 285, 237,
            189, 142, 94, 47
        ]
    );
    let t31 = s.set_timesteps(31).unwrap();
    assert_eq!(
        (t31[0], t31[1], t31[15], t31[29], t31[30]),
        (999, 967, 515, 64, 31)
    );
    let t41 = s.set_timesteps(41).unwrap();
    assert_eq!(
        (t41[0], t41[1], t41[20], t41[39], t41[40]),
        (999, 975, 511, 48, 23)
    );

    cfg.timestep_spacing = TimestepSpacing::Linspace;
    let mut s = DdimScheduler::new(cfg).unwrap();
    assert_eq!(
        s.set_timesteps(21).unwrap(),
        [
            999, 949, 899, 849, 799, 749, 699, 649, 599, 549, 500, 450, 400, 350, 300, 250, 200,
            150, 100, 50, 0
        ]
    );
    let t31 = s.set_timesteps(31).unwrap();
    assert_eq!(
        (t31[1], t31[2], t31[15], t31[28], t31[29], t31[30]),
        (966, 932, 499, 67, 33, 0)
    );
    let t41 = s.set_timesteps(41).unwrap();
    assert_eq!((t41[1], t41[20], t41[39], t41[40]), (974, 500, 25, 0));
}

#[test]
fn ddim_defaults_apply_to_missing_keys() {
    // DDIMScheduler() defaults: linear 1e-4..0.02, leading spacing, no offset.
    let mut s = DdimScheduler::from_config_json("{}").unwrap();
    assert_eq!(
        s.set_timesteps(10).unwrap(),
        [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    );
    assert!((s.alphas_cumprod()[500] - 0.077_796_65).abs() < 1e-6);
    assert!(s.config().clip_sample && s.config().set_alpha_to_one);
}

#[test]
fn v_prediction_with_clipping_matches_diffusers() {
    let json = r#"{"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "set_alpha_to_one": false, "steps_offset": 1, "prediction_type": "v_prediction",
        "clip_sample": true, "clip_sample_range": 0.5}"#;
    let mut s = DdimScheduler::from_config_json(json).unwrap();
    s.set_timesteps(21).unwrap();
    let dev = Device::Cpu;
    let sample = Tensor::new(&[0.5f32, -1.25, 2.0, 0.1], &dev).unwrap();
    let output = Tensor::new(&[-0.3f32, 0.7, 1.5, -2.0], &dev).unwrap();
    let cases = [
        (
            941usize,
            [0.508_026_36f32, -1.229_903_5, 2.056_610_8, -0.029_383_712],
        ),
        (1, [0.491_650_1, -0.480_900_65, 0.545_889_85, 0.124_255_51]),
    ];
    for (t, want) in cases {
        let got = s.step(&output, t, &sample).unwrap();
        assert_close(
            &format!("v-prediction step at {t}"),
            &got,
            &Tensor::new(&want, &dev).unwrap(),
            1e-5,
        );
    }
}

#[test]
fn bad_step_counts_are_errors() {
    let mut s = sd15_scheduler();
    assert!(s.set_timesteps(0).is_err());
    assert!(s.set_timesteps(1001).is_err());
    let err = DdimScheduler::from_config_json(r#"{"thresholding": true}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("thresholding"), "{err}");
}
