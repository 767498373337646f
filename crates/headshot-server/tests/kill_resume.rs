//! Accepted jobs survive a crash: the real binary with the tiny models is killed with SIGKILL
//! while one job runs and others wait, restarted on the same data folder, and every job it had
//! accepted ends `success`, with its outputs served. HEADSHOT_SKIP_E2E=1 skips it (loudly).

mod common;
mod real_binary;

use std::time::Duration;

use common::{client, download};
use real_binary::*;
use serde_json::{json, Value};

const KEY: &str = "kill-key";

async fn post(url: &str, body: &Value) -> Value {
    let response = client().post(url).json(body).send().await.unwrap();
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_accepted_before_a_kill_finish_after_the_restart() {
    if std::env::var("HEADSHOT_SKIP_E2E").is_ok_and(|v| v == "1") {
        eprintln!("\n\n!!!!!!!!!! SKIPPED jobs_accepted_before_a_kill_finish_after_the_restart: HEADSHOT_SKIP_E2E=1 !!!!!!!!!!\n\n");
        return;
    }
    let face = face_data_uri();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let start = || {
        let mut command = tiny_server_command(port, KEY, data.path());
        command.args(["--sync-wait-secs", "0"]);
        let mut server = Running(command.spawn().expect("starting headshot-server"));
        server.wait_healthy(&base);
        server
    };

    let mut server = start();
    let submit = format!("{base}/api/v6/image_editing/head_shot");
    let mut ids = Vec::new();
    for seed in 1..=6 {
        let v = post(
            &submit,
            &json!({"key": KEY, "prompt": "pretty woman", "face_image": face, "seed": seed,
                    "width": 128, "height": 128, "num_inference_steps": 4, "samples": 1}),
        )
        .await;
        assert_eq!(v["status"], "processing", "{v}");
        ids.push(v["id"].as_u64().unwrap());
    }
    // Let the first job reach the device, then make sure work is still outstanding.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fetch = |id: u64| {
        let base = base.clone();
        async move {
            post(
                &format!("{base}/api/v6/image_editing/fetch/{id}"),
                &json!({"key": KEY}),
            )
            .await
        }
    };
    let mut unfinished = 0;
    for &id in &ids {
        if fetch(id).await["status"] == "processing" {
            unfinished += 1;
        }
    }
    assert!(
        unfinished >= 2,
        "jobs finished before the kill; make them larger"
    );
    // SIGKILL: no drain, no chance to write anything more.
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(server);

    let _server = start();
    for &id in &ids {
        let mut last = Value::Null;
        for _ in 0..3000 {
            last = fetch(id).await;
            if last["status"] != "processing" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(last["status"], "success", "job {id}: {last}");
        let (status, png) = download(last["output"][0].as_str().unwrap()).await;
        assert_eq!(status, 200);
        assert!(png.starts_with(b"\x89PNG"));
    }
}
