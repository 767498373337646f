//! Device-thread idle time with jobs queued: face analysis as its own prepare stage (the
//! design) against face analysis on the device thread (what it replaced), with stand-ins of
//! fixed cost for both (sleeps: `analysis_ms` of ONNX Runtime on the CPU, `render_ms` of the
//! GPU), so the figures show the scheduling alone. Prints one JSON line per run:
//! `cargo bench -p headshot-worker --bench stages`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use headshot_core::{GenerationError, GenerationOutput, Generator, PreparedJob};
use headshot_test_support::{job, ScriptedFaces, ScriptedGenerator};
use headshot_worker::{Stages, Worker, WorkerConfig};

/// The old design: the device thread analyses the face itself before rendering.
struct AnalysisOnDevice {
    analysis: Duration,
    render: ScriptedGenerator,
}

impl Generator for AnalysisOnDevice {
    fn generate(&self, job: &PreparedJob) -> Result<GenerationOutput, GenerationError> {
        std::thread::sleep(self.analysis);
        self.render.generate(job)
    }
}

fn run(design: &str, jobs: u64, analysis_ms: u64, render_ms: u64) {
    let analysis = Duration::from_millis(analysis_ms);
    let render = ScriptedGenerator {
        delay: Duration::from_millis(render_ms),
        ..ScriptedGenerator::default()
    };
    let stages = match design {
        "prepare_stage" => Stages::new(
            Arc::new(ScriptedFaces {
                delay: analysis,
                ..ScriptedFaces::default()
            }),
            Box::new(render),
        ),
        _ => Stages::new(
            Arc::new(ScriptedFaces::default()),
            Box::new(AnalysisOnDevice { analysis, render }),
        ),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let worker = Worker::spawn(
            stages,
            WorkerConfig {
                queue_size: 64,
                ..WorkerConfig::default()
            },
        )
        .unwrap();
        let started = Instant::now();
        let tickets: Vec<_> = (0..jobs).map(|s| worker.submit(job(s)).unwrap()).collect();
        for ticket in tickets {
            assert!(ticket.await.output.is_ok());
        }
        let wall = started.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "design": design, "jobs": jobs, "analysis_ms": analysis_ms, "render_ms": render_ms,
                "wall_s": wall,
                "jobs_per_s": jobs as f64 / wall,
                "device_idle_with_work_s": worker.device_idle_with_work().as_secs_f64(),
                // Time the device spent on anything but rendering, over the run.
                "device_not_rendering_s": wall - (jobs * render_ms) as f64 / 1000.0,
            })
        );
        worker.shutdown().await;
    });
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported here.
    for (analysis_ms, render_ms) in [(40, 100), (100, 100), (40, 500)] {
        for design in ["analysis_on_device", "prepare_stage"] {
            run(design, 8, analysis_ms, render_ms);
        }
    }
}
