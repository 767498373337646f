//! The SDK's enterprise admin calls (`/api/v1/enterprise/image_editing/...`): real facts, the
//! submit route's key checks, HTTP 200 always (the SDK raises on anything else).

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use headshot_server::routes::admin::{
    CLEAR_CACHE_PATH, RESTART_SERVER_PATH, SYSTEM_DETAILS_PATH, UPDATE_PATH,
};
use headshot_test_support::SCRIPTED_MODEL_SET;
use serde_json::json;

const ALL: [&str; 4] = [
    SYSTEM_DETAILS_PATH,
    CLEAR_CACHE_PATH,
    RESTART_SERVER_PATH,
    UPDATE_PATH,
];

#[tokio::test]
async fn system_details_reports_devices_queue_models_and_memory() {
    let gate = Gate::closed();
    let generator = ScriptedGenerator {
        gate: Some(gate.clone()),
        ..Default::default()
    };
    let internet = Internet::start(0).await;
    let server = TestServer::start(generator, |c| {
        c.sync_wait_secs = 0.0;
        c.queue_size = 7;
    })
    .await;
    // One job held running on the device, one queued behind it.
    let first = server.submit(&body(&internet)).await;
    let second = server.submit(&body(&internet)).await;
    for _ in 0..600 {
        if server
            .generator
            .calls
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (status, v) = server.post(SYSTEM_DETAILS_PATH, &json!({"key": KEY})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "success", "{v}");
    let data = &v["data"];
    assert_eq!(data["server_version"], env!("CARGO_PKG_VERSION"));
    assert!(data["uptime_seconds"].is_u64());
    assert!(data["uptime"].as_str().unwrap().ends_with('s'));
    assert_eq!(
        data["devices"],
        json!([{"device": "cpu", "kind": "cpu", "models": SCRIPTED_MODEL_SET, "model_sets": [], "alive": true}])
    );
    assert_eq!(data["models"], json!([SCRIPTED_MODEL_SET]));
    assert_eq!(
        data["queue"],
        json!({"queued": 1, "running": 1, "max_queued": 7, "draining": false}),
        "{v}"
    );
    let memory = &data["memory"];
    if cfg!(target_os = "linux") {
        assert!(memory["process_resident_bytes"].as_u64().unwrap() > 0);
        assert!(memory["host_total_bytes"].as_u64().unwrap() > 0);
    }

    gate.open();
    for job in [first, second] {
        let done = server.fetch_until_done(job["id"].as_u64().unwrap()).await;
        assert_eq!(done["status"], "success");
    }
    let (_, v) = server.post(SYSTEM_DETAILS_PATH, &json!({"key": KEY})).await;
    assert_eq!(v["data"]["queue"]["queued"], 0);
    assert_eq!(v["data"]["queue"]["running"], 0);
}

#[tokio::test]
async fn clear_cache_removes_expired_outputs_now_and_says_so() {
    let internet = Internet::start(0).await;
    // Default TTLs: the periodic sweep runs once at start, then only a minute later.
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let kept = server.submit(&body(&internet)).await;
    let old = server.submit(&body(&internet)).await;
    // Age one job's output past the 24 h TTL.
    let old_url = old["output"][0].as_str().unwrap().to_string();
    let old_file = server
        .data_dir
        .join("outputs")
        .join(old_url.rsplit('/').next().unwrap());
    std::fs::File::options()
        .write(true)
        .open(&old_file)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 24 * 60 * 60))
        .unwrap();

    let (status, v) = server.post(CLEAR_CACHE_PATH, &json!({"key": KEY})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["data"]["files_removed"], 1, "{v}");
    assert_eq!(v["data"]["records_removed"], 0, "{v}");
    assert!(v["data"]["bytes_removed"].as_u64().unwrap() > 0);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("Removed 1 expired output files and 0 expired job records;"));
    // The scripted generator has no base models loaded on demand.
    assert_eq!(v["data"]["model_sets_unloaded"], json!([]), "{v}");
    assert!(!old_file.exists());
    assert_eq!(download(&old_url).await.0, 404);
    assert_eq!(download(kept["output"][0].as_str().unwrap()).await.0, 200);

    // Nothing left to clear.
    let (_, v) = server.post(CLEAR_CACHE_PATH, &json!({"key": KEY})).await;
    assert_eq!(v["data"]["files_removed"], 0, "{v}");
}

#[tokio::test]
async fn restart_and_update_say_not_supported_with_http_200() {
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    for (path, call) in [
        (RESTART_SERVER_PATH, "restart_server"),
        (UPDATE_PATH, "update"),
    ] {
        let (status, v) = server.post(path, &json!({"key": KEY})).await;
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(keys(&v), ["message", "status"], "{v}");
        assert_eq!(v["status"], "error");
        let message = v["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{call} is not supported by this server")),
            "{message}"
        );
    }
    // The server kept running.
    let (status, _) = server.get("/health/ready").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn admin_calls_check_the_key_like_submit() {
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    for path in ALL {
        for body in [json!({"key": "nope"}), json!({}), json!({"key": null})] {
            let (status, v) = server.post(path, &body).await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(v["status"], "error", "{path}: {v}");
            assert_eq!(v["message"], "Invalid Api Key", "{path}: {v}");
        }
        // A wrong header key is refused before the body is read; a good one is enough.
        let wrong = client()
            .post(server.url(path))
            .header("key", "nope")
            .body(format!("{{\"key\": \"{KEY}\"}}"))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = wrong.json().await.unwrap();
        assert_eq!(v["message"], "Invalid Api Key", "{path}: {v}");
        let header = client()
            .post(server.url(path))
            .header("key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(header.status(), 200);
        let v: serde_json::Value = header.json().await.unwrap();
        assert_ne!(v["message"], "Invalid Api Key", "{path}: {v}");
        // Malformed bodies get the documented error shape.
        let (status, v) = server.post_raw(path, "{not json").await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["status"], "error");
        // GET is not how the SDK calls them: a 405 in the error shape.
        let (status, v) = server.get(path).await;
        assert_eq!(status, 405, "{path}: {v}");
        assert_eq!(v["status"], "error");
    }
}
