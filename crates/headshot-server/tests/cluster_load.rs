//! Load at the shared cap, against the real binary: an API node (`--role api`, the cap N =
//! `--queue-size`) behind a real `redis-server` takes 5N concurrent submits, again and again,
//! with no worker yet. Exactly N are accepted and every other answer is the documented
//! rate-limit one; readiness stays `ok`; the API node's memory stays flat over the rounds (a
//! bounded request loop). Then a worker starts and the N accepted jobs finish. Figures printed.
//! HEADSHOT_SKIP_E2E=1 skips it (loudly).

mod common;
mod real_binary;

use std::time::Duration;

use common::client;
use headshot_test_support::services::RedisServer;
use real_binary::*;
use serde_json::{json, Value};

const KEY: &str = "load-key";
const CAP: usize = 4;
const ROUNDS: usize = 8;

/// Resident memory of a process in KiB (Linux `/proc`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn node(redis: &RedisServer, role: &str, data: &std::path::Path) -> (Running, String) {
    let port = free_port();
    let mut command = tiny_server_command(port, KEY, data);
    command
        .args(["--role", role, "--redis-url", &redis.url()])
        .args(["--sync-wait-secs", "0", "--queue-size", &CAP.to_string()]);
    let base = format!("http://127.0.0.1:{port}");
    let mut process = Running(command.spawn().expect("starting headshot-server"));
    process.wait_healthy(&base);
    (process, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_times_the_shared_cap_gets_exact_rate_limits_and_flat_memory() {
    if std::env::var("HEADSHOT_SKIP_E2E").is_ok_and(|v| v == "1") {
        eprintln!(
            "\n\n!!!!!!!!!! SKIPPED the cluster load test: HEADSHOT_SKIP_E2E=1 !!!!!!!!!!\n\n"
        );
        return;
    }
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // One shared output folder stands in for the bucket (tests/cluster_kill.rs uses S3).
    let data = tempfile::tempdir().unwrap();
    let (api, base) = node(&redis, "api", data.path());
    let face = face_data_uri();
    let submit = format!("{base}/api/v6/image_editing/head_shot");
    let http = client();

    let mut accepted = Vec::new();
    let mut limited = 0;
    let mut memory = Vec::new();
    for round in 0..ROUNDS {
        let submits = (0..5 * CAP).map(|i| {
            let body = json!({"key": KEY, "prompt": "pretty woman", "face_image": face,
                              "seed": round * 100 + i, "width": 64, "height": 64,
                              "num_inference_steps": 4, "samples": 1});
            let (http, submit) = (http.clone(), submit.clone());
            async move {
                let response = http.post(&submit).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.json::<Value>().await.unwrap()
            }
        });
        for answer in futures_util::future::join_all(submits).await {
            match answer["status"].as_str() {
                Some("processing") => accepted.push(answer["id"].as_u64().unwrap()),
                Some("error") => {
                    assert_eq!(
                        answer["message"],
                        format!("Rate limit exceeded. Maximum {CAP} queued requests allowed."),
                        "{answer}"
                    );
                    limited += 1;
                }
                _ => panic!("unexpected answer {answer}"),
            }
        }
        let health = http_get(&format!("{base}/health")).unwrap();
        assert!(
            health.contains("\"ok\""),
            "readiness after round {round}: {health}"
        );
        memory.push(rss_kib(api.0.id()));
    }
    let (first, last) = (memory[0], *memory.last().unwrap());
    eprintln!(
        "cluster load: cap {CAP}, {ROUNDS} rounds of {} concurrent submits -> {} accepted, \
         {limited} rate-limited; API node memory {first} KiB after round 1, {last} KiB after \
         round {ROUNDS}",
        5 * CAP,
        accepted.len()
    );
    assert_eq!(accepted.len(), CAP);
    assert_eq!(limited, ROUNDS * 5 * CAP - CAP);
    // Flat: what the later rounds add stays well under one request body per submit made.
    assert!(
        last.saturating_sub(first) < 16 * 1024,
        "memory grew from {first} KiB to {last} KiB: {memory:?}"
    );

    // A worker arrives and the accepted jobs finish.
    let _worker = node(&redis, "worker", data.path());
    for id in accepted {
        let mut last = Value::Null;
        for _ in 0..600 {
            let response = http
                .post(format!("{base}/api/v6/image_editing/fetch/{id}"))
                .json(&json!({"key": KEY}))
                .send()
                .await
                .unwrap();
            last = response.json().await.unwrap();
            if last["status"] != "processing" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last["status"], "success", "job {id}: {last}");
    }
}
