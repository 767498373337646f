//! A scripted device stage: one image per sample, of the job's size, whose pixels encode the
//! job's seed, so every answer can be traced to the job that asked for it. It records the
//! jobs it renders, can take a fixed time per call or wait at a gate, and misbehaves on cue:
//! a prompt containing `[panic]` panics, `[noface]` fails with `NoFace`, `[nsfw]` comes back
//! flagged by the safety checker. With a [`StepGate`] it runs a batch's denoising steps one by
//! one through that gate, reports each to the worker's observer, and stops (every job failing
//! with `Cancelled`) when the observer says so.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use headshot_core::{
    GeneratedImage, GenerationError, GenerationOutput, Generator, GeneratorInfo, JobSettings,
    PreparedJob, RgbImage, StepObserver,
};

/// The model set name [`ScriptedGenerator`] reports.
pub const SCRIPTED_MODEL_SET: &str = "scripted";

use crate::gate::{Gate, StepGate};

#[derive(Clone, Default)]
pub struct ScriptedGenerator {
    /// Every job rendered, in order.
    pub jobs: Arc<Mutex<Vec<JobSettings>>>,
    pub calls: Arc<AtomicUsize>,
    /// Time each call takes (a stand-in for the GPU).
    pub delay: Duration,
    /// Each call waits here until the test opens it.
    pub gate: Option<Gate>,
    /// Steps of an observed batch pass here one by one (none are reported without it).
    pub steps: Option<StepGate>,
    /// Images one batch may hold (0 counts as 1).
    pub batch_images: usize,
    /// Every batch started through the observed path, as the seeds of its jobs.
    pub batches: Arc<Mutex<Vec<Vec<u64>>>>,
}

impl ScriptedGenerator {
    pub fn rendered(&self) -> Vec<JobSettings> {
        self.jobs.lock().unwrap().clone()
    }
}

impl Generator for ScriptedGenerator {
    fn generate_batch_observed(
        &self,
        jobs: &[PreparedJob],
        observer: &dyn StepObserver,
    ) -> Vec<Result<GenerationOutput, GenerationError>> {
        self.batches
            .lock()
            .unwrap()
            .push(jobs.iter().map(|j| j.settings.seed).collect());
        if let Some(steps) = &self.steps {
            let total = jobs
                .first()
                .map_or(0, |j| j.settings.num_inference_steps as usize);
            for done in 1..=total {
                steps.enter();
                let flow = observer.step_done(done, total);
                steps.finish();
                if flow.is_break() {
                    return jobs
                        .iter()
                        .map(|_| Err(GenerationError::Cancelled))
                        .collect();
                }
            }
        }
        self.generate_batch(jobs)
    }

    fn max_batch_images(&self) -> usize {
        self.batch_images.max(1)
    }

    fn info(&self) -> GeneratorInfo {
        GeneratorInfo {
            device: "cpu".to_string(),
            kind: "cpu".to_string(),
            models: SCRIPTED_MODEL_SET.to_string(),
        }
    }

    fn generate(&self, job: &PreparedJob) -> Result<GenerationOutput, GenerationError> {
        let job = &job.settings;
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.jobs.lock().unwrap().push(job.clone());
        if let Some(gate) = &self.gate {
            gate.wait();
        }
        std::thread::sleep(self.delay);
        if job.prompt.contains("[panic]") {
            panic!("scripted generator panic");
        }
        if job.prompt.contains("[noface]") {
            return Err(GenerationError::NoFace);
        }
        let nsfw = job.prompt.contains("[nsfw]");
        // Candidates each encode their own seed (`seed + i`), as the real pipeline draws their
        // noise; plain samples all encode the job's seed.
        let seeds = job
            .image_seeds()
            .unwrap_or_else(|| vec![job.seed; job.images()]);
        Ok(GenerationOutput {
            images: seeds
                .into_iter()
                .map(|seed| GeneratedImage {
                    image: image_of_seed(seed, job.width, job.height),
                    nsfw,
                })
                .collect(),
        })
    }
}

/// An image whose pixels all encode `seed` (low 24 bits).
fn image_of_seed(seed: u64, width: u32, height: u32) -> RgbImage {
    let pixel = [seed as u8, (seed >> 8) as u8, (seed >> 16) as u8];
    RgbImage {
        width,
        height,
        pixels: pixel.repeat((width * height) as usize),
    }
}

/// The seed a [`ScriptedGenerator`] output encodes.
pub fn seed_of(output: &GenerationOutput) -> u64 {
    let p = &output.images[0].image.pixels;
    p[0] as u64 | (p[1] as u64) << 8 | (p[2] as u64) << 16
}
