//! Overhead of the worker itself (admission, hand-off to the device thread, batching, reply)
//! with a generator that returns at once, so the numbers are the queue's own cost per job.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;

use headshot_core::{
    GeneratedImage, GenerationError, GenerationOutput, Generator, PreparedJob, RgbImage,
};
use headshot_test_support::{job, ScriptedFaces};
use headshot_worker::{Stages, Worker, WorkerConfig};

struct Instant {
    max_batch: usize,
}

impl Generator for Instant {
    fn generate(&self, job: &PreparedJob) -> Result<GenerationOutput, GenerationError> {
        Ok(GenerationOutput {
            images: vec![GeneratedImage {
                image: RgbImage {
                    width: 1,
                    height: 1,
                    pixels: vec![job.settings.seed as u8; 3],
                },
                nsfw: false,
            }],
        })
    }

    fn max_batch_images(&self) -> usize {
        self.max_batch
    }
}

fn round_trips(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut group = c.benchmark_group("worker");
    for (jobs, max_batch) in [(1usize, 1usize), (32, 1), (32, 8)] {
        let worker = Worker::spawn(
            Stages::new(
                Arc::new(ScriptedFaces::default()),
                Box::new(Instant { max_batch }),
            ),
            WorkerConfig {
                queue_size: 64,
                ..WorkerConfig::default()
            },
        )
        .unwrap();
        group.throughput(Throughput::Elements(jobs as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("submit_and_await/max_batch_{max_batch}"), jobs),
            &jobs,
            |b, &jobs| {
                b.iter(|| {
                    rt.block_on(async {
                        let tickets: Vec<_> = (0..jobs as u64)
                            .map(|s| worker.submit(job(s)).unwrap())
                            .collect();
                        for ticket in tickets {
                            ticket.await.output.unwrap();
                        }
                    })
                })
            },
        );
        rt.block_on(worker.shutdown());
    }
    group.finish();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
