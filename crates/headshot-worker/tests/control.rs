//! Job progress and control: a running job reports the denoising step its batch reached, a
//! waiting one its place in line; a cancelled job is answered at once, never runs if it was
//! waiting, and stops its batch at the next step once no job of that batch is left.

use std::sync::Arc;
use std::time::Duration;

use headshot_core::{GenerationError, GenerationJob};
use headshot_test_support::{job, seed_of, ScriptedFaces, ScriptedGenerator, StepGate};
use headshot_worker::{Cancelled, Progress, Stages, Worker, WorkerConfig, WorkerHandle};

/// A guard against hanging, never a timing assertion.
const GUARD: Duration = Duration::from_secs(60);

fn stepped(seed: u64, steps: u32) -> GenerationJob {
    let mut job = job(seed);
    job.settings.num_inference_steps = steps;
    job
}

fn spawn(steps: &StepGate, batch_images: usize) -> (WorkerHandle, ScriptedGenerator) {
    let generator = ScriptedGenerator {
        steps: Some(steps.clone()),
        batch_images,
        ..Default::default()
    };
    let stages = Stages::new(
        Arc::new(ScriptedFaces::default()),
        Box::new(generator.clone()),
    );
    let config = WorkerConfig {
        queue_size: 8,
        ..WorkerConfig::default()
    };
    (Worker::spawn(stages, config).unwrap(), generator)
}

/// Waits until `check` holds for the job's progress (the stages run on their own threads).
async fn until(worker: &WorkerHandle, seq: u64, check: impl Fn(Option<Progress>) -> bool) {
    for _ in 0..6000 {
        if check(worker.progress(seq)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "job {seq} never reached the expected state: {:?}",
        worker.progress(seq)
    );
}

fn running(p: Option<Progress>) -> bool {
    matches!(p, Some(Progress::Running { .. }))
}

fn step_of(p: Option<Progress>) -> Option<(usize, usize)> {
    match p {
        Some(Progress::Running { step, total, .. }) => Some((step, total)),
        _ => None,
    }
}

fn seeds(generator: &ScriptedGenerator) -> Vec<u64> {
    generator.rendered().iter().map(|j| j.seed).collect()
}

#[tokio::test]
async fn progress_is_reported_step_by_step_and_the_queue_position_while_waiting() {
    let steps = StepGate::closed();
    let (worker, _generator) = spawn(&steps, 1);
    let first = worker.submit(stepped(1, 3)).unwrap();
    let a = first.seq();
    until(&worker, a, running).await;
    assert_eq!(
        step_of(worker.progress(a)),
        Some((0, 3)),
        "no step done yet"
    );
    let second = worker.submit(stepped(2, 3)).unwrap();
    let third = worker.submit(stepped(3, 3)).unwrap();
    let (second_seq, third_seq) = (second.seq(), third.seq());
    for step in 1..=2 {
        steps.allow(1);
        steps.wait_done(step);
        assert_eq!(step_of(worker.progress(a)), Some((step, 3)));
    }
    assert!(matches!(
        worker.progress(second_seq),
        Some(Progress::Waiting { position: 0, .. })
    ));
    assert!(matches!(
        worker.progress(third_seq),
        Some(Progress::Waiting { position: 1, .. })
    ));
    steps.allow(usize::MAX / 4);
    let result = tokio::time::timeout(GUARD, first).await.unwrap();
    assert_eq!(seed_of(result.output.as_ref().unwrap()), 1);
    assert_eq!(
        worker.progress(a),
        None,
        "progress is cleared at completion"
    );
    assert!(tokio::time::timeout(GUARD, second)
        .await
        .unwrap()
        .output
        .is_ok());
    assert!(tokio::time::timeout(GUARD, third)
        .await
        .unwrap()
        .output
        .is_ok());
    assert_eq!(steps.done(), 9);
}

#[tokio::test]
async fn a_cancelled_waiting_job_never_runs() {
    let steps = StepGate::closed();
    let (worker, generator) = spawn(&steps, 1);
    let mut first = worker.submit(stepped(1, 2)).unwrap();
    assert!(tokio::time::timeout(GUARD, first.started()).await.unwrap());
    let second = worker.submit(stepped(2, 2)).unwrap();
    let seq = second.seq();
    assert_eq!(worker.cancel(seq), Cancelled::Waiting);
    let cancelled = tokio::time::timeout(GUARD, second).await.unwrap();
    assert_eq!(cancelled.output, Err(GenerationError::Cancelled));
    assert_eq!(worker.in_flight(), 1, "its admission slot is free");
    assert_eq!(worker.cancel(seq), Cancelled::NotFound, "cancel twice");
    steps.allow(usize::MAX / 4);
    assert!(tokio::time::timeout(GUARD, first)
        .await
        .unwrap()
        .output
        .is_ok());
    // Another job after it runs, so the cancelled one is not merely late.
    let third = worker.submit(stepped(3, 2)).unwrap();
    assert!(tokio::time::timeout(GUARD, third)
        .await
        .unwrap()
        .output
        .is_ok());
    assert_eq!(seeds(&generator), [1, 3]);
    assert_eq!(*generator.batches.lock().unwrap(), [vec![1], vec![3]]);
}

#[tokio::test]
async fn a_cancelled_running_job_stops_at_the_next_step_and_the_next_job_runs() {
    let steps = StepGate::closed();
    let (worker, generator) = spawn(&steps, 1);
    let first = worker.submit(stepped(1, 5)).unwrap();
    let second = worker.submit(stepped(2, 5)).unwrap();
    let seq = first.seq();
    steps.allow(1);
    steps.wait_done(1);
    assert_eq!(worker.cancel(seq), Cancelled::Running);
    // Answered at once, while its batch still waits for its next step.
    let cancelled = tokio::time::timeout(GUARD, first).await.unwrap();
    assert_eq!(cancelled.output, Err(GenerationError::Cancelled));
    assert_eq!(worker.progress(seq), None);
    assert_eq!(worker.cancel(seq), Cancelled::NotFound);
    steps.allow(usize::MAX / 4);
    let next = tokio::time::timeout(GUARD, second).await.unwrap();
    assert_eq!(seed_of(next.output.as_ref().unwrap()), 2);
    // The cancelled batch did one more step (the one that saw the cancel), not its five.
    assert_eq!(steps.done(), 2 + 5);
    assert_eq!(seeds(&generator), [2], "the cancelled job made no images");
}

/// Holds the device with a first job until two compatible jobs wait behind it, then lets it
/// finish so that both start as one batch; returns their tickets once that batch runs.
async fn a_batch_of_two(
    worker: &WorkerHandle,
    steps: &StepGate,
) -> (headshot_worker::JobTicket, headshot_worker::JobTicket) {
    let mut holder = worker.submit(stepped(9, 2)).unwrap();
    assert!(tokio::time::timeout(GUARD, holder.started()).await.unwrap());
    let a = worker.submit(stepped(1, 3)).unwrap();
    let b = worker.submit(stepped(2, 3)).unwrap();
    for _ in 0..6000 {
        if worker.waiting_for_device() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(worker.waiting_for_device(), 2);
    steps.allow(2);
    assert!(tokio::time::timeout(GUARD, holder)
        .await
        .unwrap()
        .output
        .is_ok());
    until(worker, b.seq(), running).await;
    assert!(running(worker.progress(a.seq())), "both in one batch");
    (a, b)
}

#[tokio::test]
async fn a_batch_goes_on_while_one_of_its_jobs_is_left() {
    let steps = StepGate::closed();
    let (worker, generator) = spawn(&steps, 2);
    let (a, b) = a_batch_of_two(&worker, &steps).await;
    let b_seq = b.seq();
    assert_eq!(worker.cancel(a.seq()), Cancelled::Running);
    let cancelled = tokio::time::timeout(GUARD, a).await.unwrap();
    assert_eq!(cancelled.output, Err(GenerationError::Cancelled));
    steps.allow(1);
    steps.wait_done(3);
    assert_eq!(
        step_of(worker.progress(b_seq)),
        Some((1, 3)),
        "the batch goes on"
    );
    steps.allow(usize::MAX / 4);
    let kept = tokio::time::timeout(GUARD, b).await.unwrap();
    assert_eq!(seed_of(kept.output.as_ref().unwrap()), 2);
    assert_eq!(steps.done(), 2 + 3);
    assert_eq!(*generator.batches.lock().unwrap(), [vec![9], vec![1, 2]]);
}

#[tokio::test]
async fn a_batch_stops_once_all_its_jobs_are_cancelled() {
    let steps = StepGate::closed();
    let (worker, generator) = spawn(&steps, 2);
    let (a, b) = a_batch_of_two(&worker, &steps).await;
    assert_eq!(worker.cancel(a.seq()), Cancelled::Running);
    assert_eq!(worker.cancel(b.seq()), Cancelled::Running);
    for ticket in [a, b] {
        let result = tokio::time::timeout(GUARD, ticket).await.unwrap();
        assert_eq!(result.output, Err(GenerationError::Cancelled));
    }
    steps.allow(usize::MAX / 4);
    let after = worker.submit(stepped(3, 3)).unwrap();
    assert!(tokio::time::timeout(GUARD, after)
        .await
        .unwrap()
        .output
        .is_ok());
    // The holder's 2 steps, the stopped batch's first step only, the next job's 3.
    assert_eq!(steps.done(), 2 + 1 + 3);
    assert_eq!(seeds(&generator), [9, 3]);
}

#[tokio::test]
async fn a_job_cancelled_while_its_photo_is_analysed_is_answered_when_that_ends() {
    let analysis = headshot_test_support::Gate::closed();
    let faces = ScriptedFaces {
        held_photo: Some((b"slow photo".to_vec(), analysis.clone())),
        ..Default::default()
    };
    let steps = StepGate::open();
    let generator = ScriptedGenerator {
        steps: Some(steps.clone()),
        ..Default::default()
    };
    let stages = Stages::new(Arc::new(faces.clone()), Box::new(generator.clone()));
    let worker = Worker::spawn(stages, WorkerConfig::default()).unwrap();
    let mut slow = stepped(1, 2);
    slow.face_image = b"slow photo".to_vec();
    let ticket = worker.submit(slow).unwrap();
    for _ in 0..6000 {
        if !faces.photos().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(faces.photos().len(), 1, "the analysis has begun");
    assert_eq!(worker.cancel(ticket.seq()), Cancelled::Waiting);
    analysis.open();
    let result = tokio::time::timeout(GUARD, ticket).await.unwrap();
    assert_eq!(result.output, Err(GenerationError::Cancelled));
    let after = worker.submit(stepped(2, 2)).unwrap();
    assert!(tokio::time::timeout(GUARD, after)
        .await
        .unwrap()
        .output
        .is_ok());
    assert_eq!(seeds(&generator), [2]);
}
