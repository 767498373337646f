//! Accepted work survives: jobs left unfinished (with their inputs) run again at start-up, in
//! order and before new ones; during the SIGTERM drain fetch and outputs keep answering while
//! new submits are refused and /health reports not ready.

mod common;

use std::time::Duration;

use common::*;
use headshot_core::store::{JobRecord, OutputFormat};
use headshot_core::{GenerationJob, JobSettings};
use serde_json::json;

fn job(seed: u64) -> GenerationJob {
    GenerationJob {
        settings: JobSettings {
            prompt: format!("resumed {seed}"),
            width: 64,
            height: 64,
            num_inference_steps: 2,
            ..headshot_test_support::settings(seed)
        },
        face_image: face_png(),
        more_face_images: Vec::new(),
    }
}

#[tokio::test]
async fn unfinished_jobs_run_again_in_order_before_new_ones() {
    let internet = Internet::start(0).await;
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<u64> = {
        let stores =
            headshot_server::Stores::open_local(tmp.path(), Duration::from_secs(3600)).unwrap();
        (1..=3)
            .map(|seed| {
                let id = stores.jobs.next_id().unwrap();
                let prefix = stores.outputs.new_prefix();
                let record = JobRecord::queued(id, json!({}), prefix, OutputFormat::Png, 1);
                stores.jobs.insert_with_input(&record, &job(seed)).unwrap();
                id
            })
            .collect()
    };
    let gate = Gate::closed();
    let generator = ScriptedGenerator {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    let server = TestServer::start_in(tmp.path().to_path_buf(), generator, |c| {
        c.sync_wait_secs = 0.1;
    })
    .await;
    let new = server
        .submit(&json!({"key": KEY, "prompt": "new", "face_image": internet.url("/face.png"), "seed": 77}))
        .await;
    assert_eq!(new["status"], "processing");
    gate.open();
    for id in &ids {
        let done = server.fetch_until_done(*id).await;
        assert_eq!(done["status"], "success", "{done}");
        let (status, _) = download(done["output"][0].as_str().unwrap()).await;
        assert_eq!(status, 200);
    }
    let new_id = new["id"].as_u64().unwrap();
    assert_eq!(server.fetch_until_done(new_id).await["status"], "success");
    let seeds: Vec<u64> = server
        .generator
        .jobs
        .lock()
        .unwrap()
        .iter()
        .map(|j| j.seed)
        .collect();
    assert_eq!(
        seeds,
        [1, 2, 3, 77],
        "resumed jobs first, in order, with their own inputs"
    );
    assert!(server.faces.photos()[0] == face_png());
    server.stop().await;
}

#[tokio::test]
async fn the_drain_keeps_fetch_and_outputs_answering_and_refuses_submits() {
    let internet = Internet::start(0).await;
    let body = json!({"key": KEY, "prompt": "p", "face_image": internet.url("/face.png")});
    // A job finished earlier, whose outputs the draining server still serves.
    let earlier = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let finished = earlier.submit(&body).await["id"].as_u64().unwrap();
    let data_dir = earlier.data_dir.clone();
    let tmp = earlier.stop().await;

    let gate = Gate::closed();
    let generator = ScriptedGenerator {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    let mut server =
        TestServer::start_in(data_dir.clone(), generator, |c| c.sync_wait_secs = 0.2).await;
    let running = server.submit(&body).await;
    assert_eq!(running["status"], "processing");
    let id = running["id"].as_u64().unwrap();

    server.begin_shutdown();
    // Wait for the drain to begin (health says so); no timing is asserted.
    let mut draining = false;
    for _ in 0..600 {
        let (status, v) = server.get("/health").await;
        if status == 503 {
            assert_eq!(v["status"], "draining");
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(draining, "/health never reported the drain");
    // Readiness says the same; liveness stays up, so nothing restarts a draining server.
    let (status, ready) = server.get("/health/ready").await;
    assert_eq!((status, ready["status"].as_str()), (503, Some("draining")));
    let (status, live) = server.get("/health/live").await;
    assert_eq!((status, live["status"].as_str()), (200, Some("alive")));
    let (status, refused) = server.post("/api/v6/image_editing/head_shot", &body).await;
    assert_eq!(status, 503);
    assert_eq!(keys(&refused), sorted(&["message", "status"]));
    assert_eq!(refused["status"], "error");
    assert_eq!(
        documented_part(&server.fetch(id).await),
        json!({"status": "processing", "id": id, "message": "try again later.", "output": ""})
    );
    let done = server.fetch(finished).await;
    assert_eq!(done["status"], "success");
    let (status, png) = download(done["output"][0].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert!(png.starts_with(b"\x89PNG"));

    // The running job finishes within the drain, so the restart has nothing to resume.
    gate.open();
    server.stop().await;
    let again = TestServer::start_in(data_dir, ScriptedGenerator::default(), |_| {}).await;
    assert_eq!(again.fetch(id).await["status"], "success");
    assert_eq!(
        again
            .generator
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    again.stop().await;
    drop(tmp);
}

#[tokio::test]
async fn a_job_left_processing_by_a_crash_runs_again() {
    let tmp = tempfile::tempdir().unwrap();
    let id = {
        let stores =
            headshot_server::Stores::open_local(tmp.path(), Duration::from_secs(3600)).unwrap();
        let id = stores.jobs.next_id().unwrap();
        let prefix = stores.outputs.new_prefix();
        let mut record = JobRecord::queued(id, json!({}), prefix, OutputFormat::Png, 1);
        record.mark_processing();
        stores.jobs.insert_with_input(&record, &job(5)).unwrap();
        id
    };
    let steps = headshot_test_support::StepGate::closed();
    let generator = ScriptedGenerator {
        steps: Some(steps.clone()),
        ..Default::default()
    };
    let server = TestServer::start_in(tmp.path().to_path_buf(), generator, |_| {}).await;
    // Resumed: a device runs it again (step 0 of 2), and its record says processing anew.
    let running = server.fetch(id).await;
    assert_eq!(running["status"], "processing", "{running}");
    steps.allow(usize::MAX / 4);
    let done = server.fetch_until_done(id).await;
    assert_eq!(done["status"], "success", "{done}");
    let record = server.state.jobs.jobs.get(id).unwrap().unwrap();
    assert_eq!(record.status, headshot_core::store::JobStatus::Success);
    assert_eq!(
        server
            .generator
            .rendered()
            .iter()
            .map(|j| j.seed)
            .collect::<Vec<_>>(),
        [5]
    );
    server.stop().await;
}
