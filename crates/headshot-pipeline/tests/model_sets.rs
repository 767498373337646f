//! Several base models in one pipeline: the tiny set as the default, the single-file fp32 and
//! fp16 checkpoints (tools/fixtures/gen_single_file.py, rebuilt) as sets a job picks by
//! `model_id`. Each id must render what diffusers' `from_single_file` renders for its file (the
//! goldens of tests/single_file.rs), the default what diffusers renders for the tiny set, in
//! any order, with sets loaded on demand and the least recently used unloaded; jobs of
//! different sets never share a batch.

mod common;

use std::path::{Path, PathBuf};

use common::{
    check_e2e, check_e2e_model, max_abs_diff, single_file_checkpoint, workspace, E2eTolerance,
    Golden, E2E_CASES,
};
use headshot_core::{GenerationError, GenerationOutput, Generator, PreparedJob};
use headshot_pipeline::{
    ModelSet, ModelSetState, OnDemandSet, Pipeline, PipelineConfig, PipelineError, RenderOptions,
};

fn on_demand(id: &str, path: PathBuf) -> OnDemandSet {
    OnDemandSet {
        id: id.to_string(),
        models: ModelSet::Manifest(path),
    }
}

fn config(sets: Vec<OnDemandSet>, memory: Option<u64>) -> PipelineConfig {
    let mut config = PipelineConfig::new(workspace().join("models/tiny.toml"));
    config.load_face_analyzer = false;
    config.resolve.allow_download = false;
    config.resolve.progress = false;
    config.on_demand = sets;
    config.on_demand_memory = memory;
    config
}

/// The tiny set with the fp32 and fp16 checkpoints as `fp32` and `fp16`.
fn three_sets(memory: Option<u64>) -> Pipeline {
    let sets = vec![
        on_demand("fp32", single_file_checkpoint("fp32")),
        on_demand("fp16", single_file_checkpoint("fp16")),
    ];
    Pipeline::load(&config(sets, memory)).unwrap_or_else(|e| panic!("{e:?}"))
}

fn loaded(pipeline: &Pipeline) -> Vec<String> {
    pipeline
        .model_set_states()
        .into_iter()
        .filter(|s| s.loaded && !s.is_default)
        .map(|s| s.id)
        .collect()
}

fn golden(variant: &str) -> String {
    format!("single_file_{variant}_{}", E2E_CASES[0])
}

#[test]
fn each_model_id_renders_its_own_set_as_diffusers_does_in_any_order() {
    // The goldens themselves differ (the checkpoint brings its own VAE), so a job rendered
    // with the wrong set could not pass.
    let default_image = Golden::read(E2E_CASES[0]).tensor("image").clone();
    let fp32_image = Golden::read(&golden("fp32")).tensor("image").clone();
    assert!(max_abs_diff(&default_image, &fp32_image) > 0.05);

    let pipeline = three_sets(None);
    assert_eq!(pipeline.model_set_ids(), ["tiny", "fp16", "fp32"]);
    assert!(loaded(&pipeline).is_empty(), "nothing loads before a job");

    check_e2e_model(&pipeline, &golden("fp32"), &E2eTolerance::F32, "fp32");
    assert_eq!(loaded(&pipeline), ["fp32"]);
    check_e2e(&pipeline, E2E_CASES[0], &E2eTolerance::F32);
    // The default set's name picks it too.
    check_e2e_model(&pipeline, E2E_CASES[0], &E2eTolerance::F32, "tiny");
    assert_eq!(
        loaded(&pipeline),
        ["fp32"],
        "the default set is not on demand"
    );
    // No budget: one set at a time, so fp32 goes for fp16.
    check_e2e_model(&pipeline, &golden("fp16"), &E2eTolerance::F32, "fp16");
    assert_eq!(loaded(&pipeline), ["fp16"]);
    check_e2e_model(&pipeline, &golden("fp32"), &E2eTolerance::F32, "fp32");
    assert_eq!(loaded(&pipeline), ["fp32"]);

    let states = pipeline.model_set_states();
    let default = &states[0];
    assert!(default.is_default && default.loaded && default.bytes.unwrap() > 0);
    let fp16 = states.iter().find(|s| s.id == "fp16").unwrap();
    // Its size stays known after it was unloaded; the fp16 file loads at f32 like the rest.
    assert_eq!(
        fp16,
        &ModelSetState {
            id: "fp16".into(),
            is_default: false,
            loaded: false,
            bytes: default.bytes,
        }
    );
}

#[test]
fn a_budget_keeps_what_fits_and_unloads_the_least_recently_used() {
    let one_set = three_sets(None).model_set_states()[0].bytes.unwrap();
    let face = Golden::read(E2E_CASES[0]).e2e_face();
    let job = |model_id: &str| {
        let mut job = Golden::read(E2E_CASES[0]).e2e_job();
        job.num_inference_steps = 2;
        job.model.model_id = Some(model_id.to_string());
        job
    };
    let render = |pipeline: &Pipeline, id: &str| {
        pipeline
            .render(&job(id), &face, &RenderOptions::default())
            .unwrap_or_else(|e| panic!("{id}: {e}"))
            .images
    };

    // Room for both: both stay.
    let roomy = three_sets(Some(2 * one_set));
    let fp32_first = render(&roomy, "fp32");
    render(&roomy, "fp16");
    assert_eq!(loaded(&roomy), ["fp16", "fp32"]);
    // A resident set renders exactly what it rendered after its load.
    assert_eq!(render(&roomy, "fp32"), fp32_first);

    // Room for one and a half: the older one goes, the images stay the same after a reload.
    let tight = three_sets(Some(one_set + one_set / 2));
    assert_eq!(render(&tight, "fp32"), fp32_first);
    render(&tight, "fp16");
    assert_eq!(loaded(&tight), ["fp16"]);
    assert_eq!(render(&tight, "fp32"), fp32_first);
    assert_eq!(loaded(&tight), ["fp32"]);

    // A budget that cannot hold one set is refused at load, not on the first job.
    let err = Pipeline::load(&config(
        vec![on_demand("fp32", single_file_checkpoint("fp32"))],
        Some(one_set / 2),
    ))
    .err()
    .expect("a budget below one set");
    assert!(err.to_string().contains("cannot hold one"), "{err}");
}

#[test]
fn jobs_of_different_sets_never_share_a_batch() {
    let pipeline = three_sets(None);
    let golden = Golden::read(E2E_CASES[0]);
    let prepared = |model_id: Option<&str>, seed: u64| {
        let mut settings = golden.e2e_job();
        settings.num_inference_steps = 2;
        settings.seed = seed;
        settings.model.model_id = model_id.map(str::to_string);
        PreparedJob {
            settings,
            face: golden.e2e_face(),
        }
    };
    let jobs = [
        prepared(Some("fp32"), 1),
        prepared(None, 2),
        prepared(Some("fp32"), 3),
        prepared(Some("fp16"), 4),
    ];
    // Batched and single renders agree within float rounding (tests/batching.rs), so within
    // one level of 8 bits; another set's image is far from that.
    let together = pipeline.generate_batch(&jobs);
    for (job, result) in jobs.iter().zip(together) {
        let alone = pipeline.generate(job).unwrap();
        let diff = max_pixel_diff(&result.unwrap(), &alone);
        let what = (&job.settings.model.model_id, job.settings.seed);
        assert!(diff <= 1, "{what:?}: batched differs from alone by {diff}");
    }
    let default = pipeline.generate(&prepared(None, 1)).unwrap();
    let fp32 = pipeline.generate(&prepared(Some("fp32"), 1)).unwrap();
    assert!(max_pixel_diff(&default, &fp32) > 16);

    let unknown = pipeline.generate(&prepared(Some("dreamy"), 1)).unwrap_err();
    assert_eq!(
        unknown,
        GenerationError::InvalidInput(
            "the model set dreamy is not configured here (known: tiny, fp16, fp32)".into()
        )
    );
}

/// The largest difference of one 8-bit channel over every image of two outputs.
fn max_pixel_diff(a: &GenerationOutput, b: &GenerationOutput) -> u8 {
    assert_eq!(a.images.len(), b.images.len());
    a.images
        .iter()
        .zip(&b.images)
        .flat_map(|(x, y)| x.image.pixels.iter().zip(&y.image.pixels))
        .map(|(p, q)| p.abs_diff(*q))
        .max()
        .unwrap_or(0)
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    headshot_core::error_chain(err)
}

#[test]
fn a_set_that_fails_to_load_fails_its_jobs_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(single_file_checkpoint("fp32")).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let pipeline = Pipeline::load(&config(vec![on_demand("cut", cut)], None)).unwrap();
    let golden = Golden::read(E2E_CASES[0]);
    let mut job = golden.e2e_job();
    job.model.model_id = Some("cut".into());
    let err = pipeline
        .render(&job, &golden.e2e_face(), &RenderOptions::default())
        .err()
        .expect("a truncated checkpoint fails");
    assert!(matches!(err, PipelineError::ModelSetLoad { ref id, .. } if id == "cut"));
    let text = error_chain(&err);
    assert!(
        text.starts_with("cannot load the model set cut")
            && text.contains("cut.safetensors")
            && text.contains("truncated or corrupt"),
        "{text}"
    );
    assert!(loaded(&pipeline).is_empty());
    // The default set still renders as diffusers does.
    check_e2e(&pipeline, E2E_CASES[0], &E2eTolerance::F32);
}

/// tiny.toml with `from` replaced by `to`, written into `dir` with its relative folders made
/// absolute.
fn tiny_manifest_with(dir: &Path, from: &str, to: &str) -> PathBuf {
    let tiny = std::fs::read_to_string(workspace().join("models/tiny.toml")).unwrap();
    assert!(tiny.contains(from), "tiny.toml has no {from:?}");
    let text = tiny
        .replace(from, to)
        .replace("\"../", &format!("\"{}/", workspace().display()))
        .replace(":-../", &format!(":-{}/", workspace().display()));
    let path = dir.join("other.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_operators_list_is_checked_before_anything_loads() {
    let fp32 = || single_file_checkpoint("fp32");
    let refused = |sets: Vec<OnDemandSet>| {
        Pipeline::load(&config(sets, None))
            .err()
            .map(|e| error_chain(&e))
            .expect("refused")
    };
    let named_default = refused(vec![on_demand("tiny", fp32())]);
    assert!(
        named_default.contains("the default set's own name"),
        "{named_default}"
    );
    let twice = refused(vec![on_demand("a", fp32()), on_demand("a", fp32())]);
    assert!(twice.contains("listed twice"), "{twice}");
    let missing = refused(vec![on_demand(
        "gone",
        PathBuf::from("/nonexistent/gone.safetensors"),
    )]);
    assert!(missing.contains("gone.safetensors"), "{missing}");

    // A manifest with its own IP-Adapter: the shared parts are loaded once, for all sets.
    let dir = tempfile::tempdir().unwrap();
    let other_adapter = tiny_manifest_with(
        dir.path(),
        "local = \"../tests/fixtures/tiny/ip-adapter\"",
        "local = \"/elsewhere/ip-adapter\"",
    );
    let differs = refused(vec![on_demand("other", other_adapter)]);
    assert!(
        differs.contains("names its own ip_adapter") && differs.contains("other.toml"),
        "{differs}"
    );

    // The same manifest from another folder (its paths spelled differently) is accepted: the
    // shared parts are the same files.
    let same = tiny_manifest_with(dir.path(), "name = \"tiny\"", "name = \"tiny-again\"");
    let pipeline = Pipeline::load(&config(vec![on_demand("again", same)], None)).unwrap();
    check_e2e_model(&pipeline, E2E_CASES[0], &E2eTolerance::F32, "again");
}
