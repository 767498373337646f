//! Job progress and control over HTTP: records pass through `processing` when a device starts
//! them, fetch reports the step reached or the place in line, cancel stops a waiting or running
//! job (with the documented error shapes for everything else), `clear_queue` cancels what is
//! not running yet, and a cancelled job's webhook says so.

mod common;

use std::time::Duration;

use common::*;
use headshot_core::store::JobStatus;
use headshot_test_support::StepGate;
use serde_json::{json, Value};

const OTHER: &str = "other-key";

async fn start(steps: &StepGate) -> TestServer {
    let generator = ScriptedGenerator {
        steps: Some(steps.clone()),
        ..Default::default()
    };
    TestServer::start(generator, |c| {
        c.sync_wait_secs = 0.1;
        c.api_keys = vec![KEY.to_string(), OTHER.to_string()];
    })
    .await
}

/// A submit body of 21 steps with its own seed.
fn job_body(internet: &Internet, seed: u64) -> Value {
    let body = with(body(internet), "num_inference_steps", json!(21));
    with(body, "seed", json!(seed))
}

async fn submit(server: &TestServer, body: &Value) -> u64 {
    let answer = server.submit(body).await;
    assert_eq!(answer["status"], "processing", "{answer}");
    answer["id"].as_u64().unwrap()
}

async fn record_status(server: &TestServer, id: u64) -> JobStatus {
    server.state.jobs.jobs.get(id).unwrap().unwrap().status
}

/// Waits until the stored record has `status` (written by the job's background task).
async fn until_record(server: &TestServer, id: u64, status: JobStatus) {
    for _ in 0..1000 {
        if record_status(server, id).await == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id}'s record never became {status}");
}

async fn cancel_as(server: &TestServer, path: &str, key: &str, id: &str) -> Value {
    let (status, body) = server
        .post(&format!("{path}/{id}"), &json!({"key": key}))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn cancel(server: &TestServer, id: u64) -> Value {
    cancel_as(server, "/api/v6/image_editing/cancel", KEY, &id.to_string()).await
}

fn cancelled(id: u64) -> Value {
    json!({"status": "failed", "id": id, "message": "Job cancelled", "output": ""})
}

fn not_found() -> Value {
    json!({"status": "failed", "id": "", "message": "Request not found", "output": ""})
}

fn seeds(server: &TestServer) -> Vec<u64> {
    server.generator.rendered().iter().map(|j| j.seed).collect()
}

#[tokio::test]
async fn the_record_goes_processing_and_fetch_reports_progress_and_queue_position() {
    let internet = Internet::start(0).await;
    let steps = StepGate::closed();
    let server = start(&steps).await;
    let running = submit(&server, &job_body(&internet, 1)).await;
    step(&steps, 1, 1).await;
    // Written when the device started it.
    until_record(&server, running, JobStatus::Processing).await;
    let v = server.fetch(running).await;
    assert_eq!(
        keys(&v),
        sorted(&["eta", "id", "message", "output", "progress", "status"])
    );
    assert_eq!(
        (&v["status"], &v["id"], &v["message"], &v["output"]),
        (
            &json!("processing"),
            &json!(running),
            &json!("try again later."),
            &json!("")
        )
    );
    assert_eq!(v["progress"], json!({"step": 1, "total": 21}));
    assert!(v["eta"].as_f64().is_some(), "{v}");

    let waiting = submit(&server, &job_body(&internet, 2)).await;
    let w = server.fetch(waiting).await;
    assert_eq!(
        keys(&w),
        sorted(&["eta", "id", "message", "output", "queue_position", "status"])
    );
    assert_eq!(w["queue_position"], 0);
    assert_eq!(record_status(&server, waiting).await, JobStatus::Queued);

    step(&steps, 1, 2).await;
    assert_eq!(server.fetch(running).await["progress"]["step"], 2);
    steps.allow(usize::MAX / 4);
    assert_eq!(server.fetch_until_done(running).await["status"], "success");
    assert_eq!(server.fetch_until_done(waiting).await["status"], "success");
    assert_eq!(record_status(&server, running).await, JobStatus::Success);
    server.stop().await;
}

#[tokio::test]
async fn cancel_answers_for_waiting_running_finished_twice_unknown_malformed_and_foreign_jobs() {
    let internet = Internet::start(0).await;
    let steps = StepGate::closed();
    let server = start(&steps).await;
    let running = submit(&server, &job_body(&internet, 1)).await;
    step(&steps, 1, 1).await;
    let waiting = submit(&server, &job_body(&internet, 2)).await;

    // Another key's job, unknown and malformed ids: the documented not-found shape.
    let path = "/api/v6/image_editing/cancel";
    assert_eq!(
        cancel_as(&server, path, OTHER, &waiting.to_string()).await,
        not_found()
    );
    for id in ["999999", "abc", "-1", "1.5"] {
        assert_eq!(cancel_as(&server, path, KEY, id).await, not_found(), "{id}");
    }
    let bad_key = cancel_as(&server, path, "nope", &waiting.to_string()).await;
    assert_eq!(bad_key["message"], "Invalid Api Key");

    // A waiting job, the key in a header on the v1 path.
    let response = client()
        .post(server.url(&format!("/api/v1/image_editing/cancel/{waiting}")))
        .header("key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"status": "success", "id": waiting, "message": "Job cancelled"})
    );
    assert_eq!(server.fetch(waiting).await, cancelled(waiting));
    let twice = cancel(&server, waiting).await;
    assert_eq!(twice["status"], "error", "{twice}");
    assert_eq!(
        twice["message"],
        format!("Request {waiting} has already finished (failed) and cannot be cancelled.")
    );

    // The running job, on the enterprise path; it stops and frees the device for the next.
    let answer = cancel_as(
        &server,
        "/api/v1/enterprise/image_editing/cancel",
        KEY,
        &running.to_string(),
    )
    .await;
    assert_eq!(answer["status"], "success", "{answer}");
    assert_eq!(server.fetch(running).await, cancelled(running));
    steps.allow(usize::MAX / 4);
    // Answered within the sync wait or later; either way it runs.
    let next = server.submit(&job_body(&internet, 3)).await["id"]
        .as_u64()
        .unwrap();
    assert_eq!(server.fetch_until_done(next).await["status"], "success");
    assert_eq!(seeds(&server), [3], "neither cancelled job made images");
    assert_eq!(
        steps.done(),
        2 + 21,
        "the running job stopped at its next step"
    );

    let finished = cancel(&server, next).await;
    assert_eq!(
        finished["message"],
        format!("Request {next} has already finished (success) and cannot be cancelled.")
    );
    server.stop().await;
}

#[tokio::test]
async fn clear_queue_cancels_the_callers_waiting_jobs_as_the_sdk_calls_it() {
    let internet = Internet::start(0).await;
    let steps = StepGate::closed();
    let server = start(&steps).await;
    let running = submit(&server, &job_body(&internet, 1)).await;
    fetch_until(&server, running, |v| v["progress"].is_object()).await;
    let mine = [
        submit(&server, &job_body(&internet, 2)).await,
        submit(&server, &job_body(&internet, 3)).await,
    ];
    let theirs = submit(&server, &with(job_body(&internet, 4), "key", json!(OTHER))).await;

    // modelslab_py's `clear_queue`: a JSON body {"key"} and its own header.
    let response = client()
        .post(server.url("/api/v1/enterprise/image_editing/clear_queue"))
        .header("X-Requested-With", "modelslab-py")
        .json(&json!({"key": KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"status": "success", "message": "Queue cleared", "cancelled": 2})
    );
    for id in mine {
        assert_eq!(server.fetch(id).await, cancelled(id));
    }
    // The running job and the other key's job are left alone.
    assert!(server.fetch(running).await["progress"].is_object());
    assert_eq!(server.fetch_as(OTHER, theirs).await["queue_position"], 0);
    steps.allow(usize::MAX / 4);
    assert_eq!(server.fetch_until_done(running).await["status"], "success");
    let done = server.fetch_as(OTHER, theirs).await;
    let done = if done["status"] == "processing" {
        fetch_until_other(&server, theirs).await
    } else {
        done
    };
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(seeds(&server), [1, 4]);
    server.stop().await;
}

async fn fetch_until_other(server: &TestServer, id: u64) -> Value {
    for _ in 0..1000 {
        let body = server.fetch_as(OTHER, id).await;
        if body["status"] != "processing" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never finished");
}

#[tokio::test]
async fn a_cancelled_jobs_webhook_reports_the_cancel() {
    let mut internet = Internet::start(0).await;
    let steps = StepGate::closed();
    let server = start(&steps).await;
    let running = submit(&server, &job_body(&internet, 1)).await;
    let hooked = job_body(&internet, 2);
    let hooked = with(hooked, "webhook", json!(internet.url("/webhook")));
    let waiting = submit(&server, &with(hooked, "track_id", json!("t-7"))).await;
    assert_eq!(cancel(&server, waiting).await["status"], "success");
    assert_eq!(
        internet.next_webhook().await,
        json!({"status": "failed", "id": waiting, "message": "Job cancelled", "track_id": "t-7"})
    );
    steps.allow(usize::MAX / 4);
    assert_eq!(server.fetch_until_done(running).await["status"], "success");
    server.stop().await;
}
