//! A scripted device stage: one image per sample, of the job's size, whose pixels encode the
//! job's seed, so every answer can be traced to the job that asked for it. It records the
//! jobs it renders, can take a fixed time per call or wait at a gate, and misbehaves on cue:
//! a prompt containing `[panic]` panics, `[noface]` fails with `NoFace`, `[nsfw]` comes back
//! flagged by the safety checker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use headshot_core::{
    GeneratedImage, GenerationError, GenerationOutput, Generator, GeneratorInfo, JobSettings,
    PreparedJob, RgbImage,
};

/// The model set name [`ScriptedGenerator`] reports.
pub const SCRIPTED_MODEL_SET: &str = "scripted";

use crate::gate::Gate;

#[derive(Clone, Default)]
pub struct ScriptedGenerator {
    /// Every job rendered, in order.
    pub jobs: Arc<Mutex<Vec<JobSettings>>>,
    pub calls: Arc<AtomicUsize>,
    /// Time each call takes (a stand-in for the GPU).
    pub delay: Duration,
    /// Each call waits here until the test opens it.
    pub gate: Option<Gate>,
}

impl ScriptedGenerator {
    pub fn rendered(&self) -> Vec<JobSettings> {
        self.jobs.lock().unwrap().clone()
    }
}

impl Generator for ScriptedGenerator {
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
        Ok(GenerationOutput {
            images: (0..job.samples)
                .map(|_| GeneratedImage {
                    image: image_of_seed(job),
                    nsfw,
                })
                .collect(),
        })
    }
}

/// An image of the job's size whose pixels all encode its seed (low 24 bits).
fn image_of_seed(job: &JobSettings) -> RgbImage {
    let pixel = [
        job.seed as u8,
        (job.seed >> 8) as u8,
        (job.seed >> 16) as u8,
    ];
    RgbImage {
        width: job.width,
        height: job.height,
        pixels: pixel.repeat((job.width * job.height) as usize),
    }
}

/// The seed a [`ScriptedGenerator`] output encodes.
pub fn seed_of(output: &GenerationOutput) -> u64 {
    let p = &output.images[0].image.pixels;
    p[0] as u64 | (p[1] as u64) << 8 | (p[2] as u64) << 16
}
