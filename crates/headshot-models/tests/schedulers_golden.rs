//! DPM-Solver++ 2M, Euler, Euler ancestral and UniPC against diffusers 0.35.2's classes of the
//! same names, step by step (goldens/schedulers.safetensors, tools/fixtures/gen_sched_goldens.py):
//! each case's config through `sampler_from_config`, its timesteps, sigmas and
//! init_noise_sigma, then every step fed the golden's sample and model output (and, for Euler
//! ancestral, its noise).

mod encoders_common;

use std::collections::HashMap;

use candle_core::{IndexOp, Tensor};
use encoders_common::*;
use headshot_core::SchedulerName;
use headshot_models::schedulers::{
    sampler_from_config, DpmSolverMultistep, EulerAncestralDiscrete, EulerDiscrete, Sampler,
    SigmaConfig, UniPcMultistep,
};
use serde_json::Value;

struct Case {
    name: String,
    class: SchedulerName,
    config: String,
    karras: bool,
    steps: usize,
}

fn cases() -> Vec<Case> {
    let meta = golden_metadata("schedulers.safetensors");
    let cases: Vec<Value> = serde_json::from_str(&meta["cases"]).expect("cases JSON");
    cases
        .into_iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            class: c["class"].as_str().unwrap().parse().unwrap(),
            config: c["config"].to_string(),
            karras: c["use_karras_sigmas"].as_bool().unwrap(),
            steps: c["steps"].as_u64().unwrap() as usize,
        })
        .collect()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn assert_values_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * w.abs().max(1.0),
            "{what}[{i}]: {g} vs diffusers {w}"
        );
    }
}

/// The sigmas the concrete type computed for the case.
fn sigmas_of(case: &Case) -> Vec<f32> {
    fn after<S: Sampler>(mut sampler: S, steps: usize, sigmas: fn(&S) -> &[f32]) -> Vec<f32> {
        sampler.set_timesteps(steps).unwrap();
        sigmas(&sampler).to_vec()
    }
    let config = SigmaConfig::from_json(&case.config, Some(case.karras)).unwrap();
    let n = case.steps;
    match case.class {
        SchedulerName::DpmSolverMultistep => after(
            DpmSolverMultistep::new(config).unwrap(),
            n,
            DpmSolverMultistep::sigmas,
        ),
        SchedulerName::EulerDiscrete => after(
            EulerDiscrete::new(config).unwrap(),
            n,
            EulerDiscrete::sigmas,
        ),
        SchedulerName::EulerAncestralDiscrete => after(
            EulerAncestralDiscrete::new(config).unwrap(),
            n,
            EulerAncestralDiscrete::sigmas,
        ),
        SchedulerName::UniPcMultistep => after(
            UniPcMultistep::new(config).unwrap(),
            n,
            UniPcMultistep::sigmas,
        ),
        SchedulerName::Ddim => unreachable!("no DDIM case in the file"),
    }
}

fn check_case(case: &Case, g: &HashMap<String, Tensor>) {
    let key = |k: &str| format!("{}/{k}", case.name);
    let mut sampler = sampler_from_config(case.class, &case.config, Some(case.karras))
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    assert_eq!(sampler.name(), case.class);
    let timesteps: Vec<f32> = sampler
        .set_timesteps(case.steps)
        .unwrap()
        .into_iter()
        .map(|t| t as f32)
        .collect();
    assert_values_close(
        &format!("{} timesteps", case.name),
        &timesteps,
        &f32s(&g[&key("timesteps")]),
        1e-5,
    );
    assert_values_close(
        &format!("{} sigmas", case.name),
        &sigmas_of(case),
        &f32s(&g[&key("sigmas")]),
        1e-5,
    );
    assert_values_close(
        &format!("{} init_noise_sigma", case.name),
        &[sampler.init_noise_sigma() as f32],
        &f32s(&g[&key("init_noise_sigma")]),
        1e-5,
    );
    let outputs = &g[&key("model_outputs")];
    let scaled = &g[&key("scaled_inputs")];
    let prev = &g[&key("prev_samples")];
    let noise = g.get(&key("noise"));
    assert_eq!(sampler.needs_noise(), noise.is_some(), "{}", case.name);
    let mut sample = g[&key("initial_sample")].clone();
    for i in 0..timesteps.len() {
        let what = format!("{} step {i}", case.name);
        let input = sampler.scale_model_input(&sample, i).unwrap();
        assert_close(
            &format!("{what} scaled input"),
            &input,
            &scaled.i(i).unwrap(),
            1e-5,
        );
        let step_noise = noise.map(|n| n.i(i).unwrap());
        let out = sampler
            .step(&outputs.i(i).unwrap(), i, &sample, step_noise.as_ref())
            .unwrap();
        let want = prev.i(i).unwrap();
        assert_close(&what, &out, &want, 1e-5);
        sample = want;
    }
}

fn check_class(class: SchedulerName) {
    let g = golden("schedulers.safetensors");
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.class == class).collect();
    assert!(cases.len() >= 4, "{class}: {} cases", cases.len());
    for case in &cases {
        check_case(case, &g);
    }
}

#[test]
fn dpm_solver_multistep_matches_diffusers_with_and_without_karras() {
    check_class(SchedulerName::DpmSolverMultistep);
}

#[test]
fn euler_discrete_matches_diffusers_with_and_without_karras() {
    check_class(SchedulerName::EulerDiscrete);
}

#[test]
fn euler_ancestral_matches_diffusers_given_its_noise() {
    check_class(SchedulerName::EulerAncestralDiscrete);
}

#[test]
fn unipc_multistep_matches_diffusers_with_and_without_karras() {
    check_class(SchedulerName::UniPcMultistep);
}

#[test]
fn karras_sigmas_are_refused_where_diffusers_has_none() {
    let json = std::fs::read_to_string(tiny("sd15/scheduler/scheduler_config.json")).unwrap();
    for class in [SchedulerName::Ddim, SchedulerName::EulerAncestralDiscrete] {
        let err = sampler_from_config(class, &json, Some(true))
            .err()
            .unwrap_or_else(|| panic!("{class} took Karras sigmas"))
            .to_string();
        assert!(
            err.contains("Karras") && err.contains("DPMSolverMultistepScheduler"),
            "{err}"
        );
        assert!(sampler_from_config(class, &json, Some(false)).is_ok());
    }
}

#[test]
fn unimplemented_options_are_refused_with_the_key_named() {
    let refused = [
        (
            SchedulerName::DpmSolverMultistep,
            r#"{"algorithm_type": "sde-dpmsolver++"}"#,
            "algorithm_type",
        ),
        (
            SchedulerName::DpmSolverMultistep,
            r#"{"solver_order": 3}"#,
            "solver_order",
        ),
        (
            SchedulerName::UniPcMultistep,
            r#"{"thresholding": true}"#,
            "thresholding",
        ),
        (
            SchedulerName::UniPcMultistep,
            r#"{"predict_x0": false}"#,
            "predict_x0",
        ),
        (
            SchedulerName::EulerDiscrete,
            r#"{"use_exponential_sigmas": true}"#,
            "use_exponential_sigmas",
        ),
        (
            SchedulerName::EulerDiscrete,
            r#"{"interpolation_type": "log_linear"}"#,
            "interpolation_type",
        ),
        (
            SchedulerName::EulerAncestralDiscrete,
            r#"{"prediction_type": "sample"}"#,
            "prediction_type",
        ),
    ];
    for (class, json, key) in refused {
        let err = sampler_from_config(class, json, None)
            .err()
            .unwrap_or_else(|| panic!("{class} took {json}"))
            .to_string();
        assert!(err.contains(key), "{class} {json}: {err}");
    }
    // A DPM-saved config's -Infinity (Python's json) reads, and other classes' keys are ignored.
    let saved = r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
        "solver_type": "midpoint", "clip_sample": false, "skip_prk_steps": true}"#;
    for class in [
        SchedulerName::DpmSolverMultistep,
        SchedulerName::UniPcMultistep,
    ] {
        assert!(sampler_from_config(class, saved, None).is_ok(), "{class}");
    }
}
