//! Cost of the persistence steps on a job's path: reserving an id and writing its record
//! (twice: queued, then finished), and writing + serving a 512x512-sized PNG.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use headshot_store::{
    JobRecord, JobStore, LocalDiskOutputStore, OutputFormat, OutputName, OutputStore, RedbJobStore,
};

fn job_records(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbJobStore::open(dir.path().join("jobs.redb")).unwrap();
    let meta = serde_json::json!({
        "prompt": "a professional headshot portrait, studio lighting", "negative_prompt": "blurry",
        "width": 512, "height": 512, "samples": 1, "num_inference_steps": 31, "seed": 12345,
        "guidance_scale": 7.5, "safety_checker": "yes", "safety_checker_type": "blur",
    });
    c.bench_function("redb/record_lifecycle", |b| {
        b.iter(|| {
            let id = store.next_id().unwrap();
            let mut record = JobRecord::queued(
                id,
                meta.clone(),
                "0b5a5cc1-8a86-4d58-9d7c-1f1e0e7f6c55",
                OutputFormat::Png,
                1,
            );
            store.insert(&record).unwrap();
            record.mark_success(
                vec![format!("{}-0.png", record.file_prefix)],
                false,
                Duration::from_secs(3),
            );
            store.update(&record).unwrap();
            store.get(id).unwrap().unwrap()
        })
    });
}

fn outputs(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDiskOutputStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
    // About the size of a compressed 512x512 portrait.
    let png: Vec<u8> = (0..400 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let mut group = c.benchmark_group("local_disk");
    group.throughput(Throughput::Bytes(png.len() as u64));
    group.bench_function("put_then_read_400KiB", |b| {
        b.iter(|| {
            let name = OutputName::new(&store.new_prefix(), 0, OutputFormat::Png).unwrap();
            store.put(&name, &png).unwrap();
            store.read(&name).unwrap().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, job_records, outputs);
criterion_main!(benches);
