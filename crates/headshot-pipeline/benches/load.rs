//! Loading the tiny model set (CPU f32, no face models, no safety checker): the UNet, VAE and
//! text encoder from the diffusers folders, against the same weights from one single-file LDM
//! checkpoint (tools/fixtures/gen_single_file.py's fp32 and fp16 files, rebuilt from their
//! description). Both load everything else (tokenizer, image encoder, adapter + LoRA fusion)
//! the same way, so the difference is the renaming backend and the one bigger file.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use headshot_pipeline::{ModelSet, Pipeline, PipelineConfig};
use headshot_weights::{ComponentKind, Manifest, ResolveOptions};

fn options() -> ResolveOptions {
    ResolveOptions {
        cache_dir: std::env::temp_dir().join("headshot-bench-no-cache"),
        allow_download: false,
        progress: false,
        only: Some(
            ComponentKind::ALL
                .into_iter()
                .filter(|k| !k.is_face_model() && !k.is_safety_model())
                .collect(),
        ),
    }
}

fn config(manifest: &Manifest) -> PipelineConfig {
    let mut config = PipelineConfig::new("unused.toml");
    config.models = ModelSet::Resolved(headshot_weights::resolve(manifest, &options()).unwrap());
    config.load_face_analyzer = false;
    config.load_safety_checker = false;
    config
}

fn bench(c: &mut Criterion) {
    let tiny_toml = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny.toml");
    let tiny = Manifest::from_file(&tiny_toml).unwrap();
    // The checkpoint's VAE is the base one; the folder set's override has the same shapes.
    let dir = tempfile::tempdir().unwrap();
    let folder = config(&tiny);
    let fp32 = config(
        &tiny
            .clone()
            .with_checkpoint(&headshot_test_support::single_file::build(
                "fp32",
                dir.path(),
            ))
            .unwrap(),
    );
    let fp16 = config(
        &tiny
            .with_checkpoint(&headshot_test_support::single_file::build(
                "fp16",
                dir.path(),
            ))
            .unwrap(),
    );
    let mut group = c.benchmark_group("load_tiny_set");
    group.sample_size(20);
    group.bench_function("diffusers_folders", |b| {
        b.iter(|| Pipeline::load(&folder).unwrap())
    });
    group.bench_function("single_file_fp32", |b| {
        b.iter(|| Pipeline::load(&fp32).unwrap())
    });
    group.bench_function("single_file_fp16", |b| {
        b.iter(|| Pipeline::load(&fp16).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
