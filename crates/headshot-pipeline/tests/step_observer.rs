//! The denoising loop reports every step to its observer and stops when told: steps 1..=total
//! in order, the same pixels as a render nobody watches (the goldens of e2e_goldens.rs go
//! through the same observed path with `()` watching), and a cancelled render ends early
//! with `Cancelled` (the device stage then answers its jobs as cancelled).

mod common;

use std::ops::ControlFlow;
use std::sync::Mutex;

use common::{golden_face_crop, tiny};
use headshot_core::{
    GenerationError, Generator, JobSettings, PreparedFace, PreparedJob, StepObserver,
};
use headshot_pipeline::{PipelineError, RenderOptions};

/// Records every step; asks to stop once `stop_after` steps are done.
struct Recorder {
    steps: Mutex<Vec<(usize, usize)>>,
    stop_after: Option<usize>,
}

impl Recorder {
    fn new(stop_after: Option<usize>) -> Self {
        Recorder {
            steps: Mutex::new(Vec::new()),
            stop_after,
        }
    }

    fn steps(&self) -> Vec<(usize, usize)> {
        self.steps.lock().unwrap().clone()
    }
}

impl StepObserver for Recorder {
    fn step_done(&self, done: usize, total: usize) -> ControlFlow<()> {
        self.steps.lock().unwrap().push((done, total));
        match self.stop_after {
            Some(n) if done >= n => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

fn face() -> PreparedFace {
    let mut id_embedding: Vec<f32> = (0..512).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    let norm = id_embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
    id_embedding.iter_mut().for_each(|v| *v /= norm);
    PreparedFace {
        id_embedding,
        aligned_224: golden_face_crop(),
        faces_found: 1,
        more_aligned_224: Vec::new(),
    }
}

fn request(seed: u64) -> JobSettings {
    JobSettings {
        prompt: "pretty woman".into(),
        width: 128,
        height: 128,
        num_inference_steps: 4,
        ..headshot_test_support::settings(seed)
    }
}

#[test]
fn every_step_is_reported_and_the_pixels_stay_the_same() {
    let p = tiny();
    let (job, face) = (request(3), face());
    let recorder = Recorder::new(None);
    let watched = p
        .render_batch_observed(&[(&job, &face)], &RenderOptions::default(), &recorder)
        .unwrap();
    assert_eq!(recorder.steps(), [(1, 4), (2, 4), (3, 4), (4, 4)]);
    let plain = p.render(&job, &face, &RenderOptions::default()).unwrap();
    assert_eq!(watched[0].images, plain.images, "watching changes nothing");
}

#[test]
fn a_cancelled_render_stops_at_the_step_that_saw_it() {
    let p = tiny();
    let (job, face) = (request(3), face());
    let recorder = Recorder::new(Some(2));
    let stopped = p.render_batch_observed(&[(&job, &face)], &RenderOptions::default(), &recorder);
    assert!(
        matches!(stopped, Err(PipelineError::Cancelled { done: 2, total: 4 })),
        "{stopped:?}"
    );
    assert_eq!(recorder.steps(), [(1, 4), (2, 4)], "no step after the stop");
}

#[test]
fn the_generator_answers_every_job_of_a_stopped_batch_as_cancelled() {
    let p = tiny();
    let jobs: Vec<PreparedJob> = [5, 6]
        .map(|seed| PreparedJob {
            settings: request(seed),
            face: face(),
        })
        .into();
    let recorder = Recorder::new(Some(1));
    let results = p.generate_batch_observed(&jobs, &recorder);
    assert_eq!(
        results,
        vec![
            Err(GenerationError::Cancelled),
            Err(GenerationError::Cancelled)
        ]
    );
    assert_eq!(
        recorder.steps(),
        [(1, 4)],
        "one batch, stopped after its first step"
    );
}
