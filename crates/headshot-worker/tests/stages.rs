//! The prepare stage in front of the device stage: bad photos and out-of-bounds jobs are
//! answered there without taking a device slot, and a slow face analysis never holds up
//! another job's render.

use std::sync::Arc;
use std::time::Duration;

use headshot_core::GenerationError;
use headshot_test_support::{
    job, seed_of, Gate, ScriptedFaces, ScriptedGenerator, FACELESS_PHOTO, UNREADABLE_PHOTO,
};
use headshot_worker::{Stages, Worker, WorkerConfig, WorkerHandle};

/// A guard against hanging, never a timing assertion.
const GUARD: Duration = Duration::from_secs(60);

fn spawn(faces: ScriptedFaces, generator: ScriptedGenerator) -> WorkerHandle {
    spawn_with(faces, generator, 1)
}

fn spawn_with(
    faces: ScriptedFaces,
    generator: ScriptedGenerator,
    prepare_threads: usize,
) -> WorkerHandle {
    let config = WorkerConfig {
        queue_size: 8,
        prepare_threads,
        ..WorkerConfig::default()
    };
    Worker::spawn(Stages::new(Arc::new(faces), Box::new(generator)), config).unwrap()
}

#[tokio::test]
async fn bad_photos_are_refused_before_the_device_queue() {
    let generator = ScriptedGenerator::default();
    let worker = spawn(ScriptedFaces::default(), generator.clone());
    let mut unreadable = job(1);
    unreadable.face_image = UNREADABLE_PHOTO.to_vec();
    let mut faceless = job(2);
    faceless.face_image = FACELESS_PHOTO.to_vec();

    let unreadable = worker.submit(unreadable).unwrap().await;
    assert!(
        matches!(unreadable.output, Err(GenerationError::UnreadableImage(_))),
        "{:?}",
        unreadable.output
    );
    let faceless = worker.submit(faceless).unwrap().await;
    assert_eq!(faceless.output, Err(GenerationError::NoFace));
    // Neither reached a device: no batch, and their slots are free again.
    assert_eq!(unreadable.batch_size, 0);
    assert_eq!(faceless.batch_size, 0);
    assert!(generator.rendered().is_empty());
    assert_eq!(worker.in_flight(), 0);

    let good = worker.submit(job(3)).unwrap().await;
    assert_eq!(seed_of(&good.output.unwrap()), 3);
    let seeds: Vec<u64> = generator.rendered().iter().map(|j| j.seed).collect();
    assert_eq!(seeds, [3]);
}

#[tokio::test]
async fn a_job_out_of_bounds_is_refused_before_its_photo_is_analysed() {
    let faces = ScriptedFaces::default();
    let generator = ScriptedGenerator::default();
    let worker = spawn(faces.clone(), generator.clone());
    let mut huge = job(1);
    huge.settings.width = 4096;
    huge.face_image = b"never looked at".to_vec();
    let result = worker.submit(huge).unwrap().await;
    match result.output {
        Err(GenerationError::InvalidInput(message)) => {
            assert!(message.contains("exceeds this server's limit"), "{message}")
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert!(faces.photos().is_empty());
    assert!(generator.rendered().is_empty());
}

#[tokio::test]
async fn a_slow_face_analysis_does_not_delay_another_jobs_render() {
    let slow_photo = b"a photo that takes long to analyse".to_vec();
    // The slow analysis lasts until the test ends it, after the quick job has been rendered.
    let analysis = Gate::closed();
    let faces = ScriptedFaces {
        held_photo: Some((slow_photo.clone(), analysis.clone())),
        ..ScriptedFaces::default()
    };
    let generator = ScriptedGenerator::default();
    // Two prepare threads, so the quick photo need not wait behind the slow one's analysis.
    let worker = spawn_with(faces.clone(), generator.clone(), 2);

    let mut slow = job(1);
    slow.face_image = slow_photo;
    let slow = tokio::spawn(worker.submit(slow).unwrap());
    // Submitted after the slow one, rendered while the slow one is still being analysed.
    let quick = tokio::time::timeout(GUARD, worker.submit(job(2)).unwrap())
        .await
        .expect("the quick job waited for the slow analysis");
    assert_eq!(seed_of(&quick.output.unwrap()), 2);
    let seeds: Vec<u64> = generator.rendered().iter().map(|j| j.seed).collect();
    assert_eq!(seeds, [2]);
    assert!(!slow.is_finished());

    analysis.open();
    let slow = tokio::time::timeout(GUARD, slow).await.unwrap().unwrap();
    assert_eq!(seed_of(&slow.output.unwrap()), 1);
    assert_eq!(faces.photos().len(), 2);
}

/// A panic payload whose own `Drop` panics: dropped carelessly after `catch_unwind`, it
/// would unwind through the device thread and stop it.
struct PanicsWhenDropped;

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        panic!("dropping the payload");
    }
}

struct PanicsWithABadPayload;

impl headshot_core::Generator for PanicsWithABadPayload {
    fn generate(
        &self,
        job: &headshot_core::PreparedJob,
    ) -> Result<headshot_core::GenerationOutput, GenerationError> {
        if job.settings.seed == 1 {
            std::panic::panic_any(PanicsWhenDropped);
        }
        ScriptedGenerator::default().generate(job)
    }
}

#[tokio::test]
async fn a_panic_whose_payload_panics_when_dropped_fails_only_its_job() {
    let stages = Stages::new(
        Arc::new(ScriptedFaces::default()),
        Box::new(PanicsWithABadPayload),
    );
    let worker = Worker::spawn(stages, WorkerConfig::default()).unwrap();
    let bad = tokio::time::timeout(GUARD, worker.submit(job(1)).unwrap())
        .await
        .unwrap();
    assert!(
        matches!(&bad.output, Err(GenerationError::Internal { message, .. }) if message.contains("panicked")),
        "{:?}",
        bad.output
    );
    // The device thread is still there.
    let good = tokio::time::timeout(GUARD, worker.submit(job(2)).unwrap())
        .await
        .unwrap();
    assert_eq!(seed_of(&good.output.unwrap()), 2);
}

#[tokio::test]
async fn live_thread_counts_follow_the_stages() {
    let worker = spawn(ScriptedFaces::default(), ScriptedGenerator::default());
    assert_eq!(worker.live_devices(), worker.devices());
    assert_eq!(
        worker.live_preparers(),
        WorkerConfig::default().prepare_threads
    );
    // Each device as its generator described itself, alive while its thread runs.
    let status = worker.device_status();
    assert_eq!(status.len(), worker.devices());
    assert_eq!(
        status[0].info.models,
        headshot_test_support::SCRIPTED_MODEL_SET
    );
    assert!(status[0].alive);
    worker.shutdown().await;
    assert_eq!((worker.live_devices(), worker.live_preparers()), (0, 0));
    assert!(worker.device_status().iter().all(|d| !d.alive));
}
