//! `--model-set`: the real binary with the tiny set as `--models` and the single-file fp32
//! checkpoint (rebuilt from tests/fixtures/tiny/single-file) as `fp32`. A request's `model_id`
//! picks the set: `fp32` renders the checkpoint (another image than the default, the same one
//! every time), the default set's name or no `model_id` the tiny set, an unknown id the
//! validation error naming what is served. `system_details` and /metrics show which sets
//! each device holds. The pipeline's own tests (headshot-pipeline
//! tests/model_sets.rs) hold each set to diffusers' images.

mod common;
mod real_binary;

use common::{client, download, metrics_text};
use real_binary::*;
use serde_json::{json, Value};

const KEY: &str = "sets-key";

async fn post(url: &str, body: &Value) -> Value {
    let response = client().post(url).json(body).send().await.unwrap();
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

async fn system_details(base: &str) -> Value {
    let v = post(
        &format!("{base}/api/v1/enterprise/image_editing/system_details"),
        &json!({"key": KEY}),
    )
    .await;
    assert_eq!(v["status"], "success", "{v}");
    v["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_id_picks_one_of_the_configured_sets() {
    let checkpoints = tempfile::tempdir().unwrap();
    let fp32 = headshot_test_support::single_file::build("fp32", checkpoints.path());
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut command = tiny_server_command(port, KEY, data.path());
    command
        .arg("--model-set")
        .arg(format!("fp32={}", fp32.display()));
    let mut server = Running::spawn(command, test_assets());
    server.wait_healthy(&base);

    let face = face_data_uri();
    let submit = format!("{base}/api/v6/image_editing/head_shot");
    let render = |model_id: Option<&'static str>| {
        let mut body = small_job(KEY, &face);
        if let Some(id) = model_id {
            body["model_id"] = json!(id);
        }
        let submit = submit.clone();
        async move {
            let v = post(&submit, &body).await;
            assert_eq!(v["status"], "success", "{model_id:?}: {v}");
            let url = v["output"][0].as_str().unwrap().to_string();
            let (status, png) = download(&url).await;
            assert_eq!(status, 200);
            png
        }
    };

    // Before any job names it, `fp32` is configured but not loaded.
    let details = system_details(&base).await;
    assert_eq!(details["model_ids"], json!(["tiny", "fp32"]), "{details}");
    assert_eq!(
        details["devices"][0]["model_sets"],
        json!([
            {"id": "tiny", "default": true, "loaded": true, "memory_mib": details["devices"][0]["model_sets"][0]["memory_mib"]},
            {"id": "fp32", "default": false, "loaded": false, "memory_mib": null},
        ]),
        "{details}"
    );
    assert!(
        details["devices"][0]["model_sets"][0]["memory_mib"]
            .as_u64()
            .unwrap()
            > 0
    );

    let checkpoint_image = render(Some("fp32")).await;
    // Now it is in memory, and says how much it takes (the same architecture as the default).
    let details = system_details(&base).await;
    let sets = &details["devices"][0]["model_sets"];
    println!("system_details model_sets after a job of fp32: {sets}");
    assert_eq!(sets[1]["id"], "fp32", "{details}");
    assert_eq!(sets[1]["loaded"], true, "{details}");
    assert_eq!(sets[1]["memory_mib"], sets[0]["memory_mib"], "{details}");
    let metrics = metrics_text(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains(r#"headshot_model_set_loaded{device="0",model_set="fp32"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"headshot_model_set_bytes{device="0",model_set="fp32"}"#),
        "{metrics}"
    );

    let default_image = render(None).await;
    assert_ne!(
        checkpoint_image, default_image,
        "fp32 rendered the default set"
    );
    assert_eq!(render(Some("tiny")).await, default_image);
    // Back to the checkpoint (loaded again after the default's turn or still resident): the
    // same seed gives the same image.
    assert_eq!(render(Some("fp32")).await, checkpoint_image);

    // clear_cache unloads it (the device is idle: at once); its next job loads it again and
    // renders the same image.
    let cleared = post(
        &format!("{base}/api/v1/enterprise/image_editing/clear_cache"),
        &json!({"key": KEY}),
    )
    .await;
    assert_eq!(cleared["status"], "success", "{cleared}");
    assert_eq!(
        cleared["data"]["model_sets_unloaded"],
        json!(["fp32"]),
        "{cleared}"
    );
    let mut unloaded = false;
    for _ in 0..200 {
        let details = system_details(&base).await;
        let sets = &details["devices"][0]["model_sets"];
        assert_eq!(sets[0]["loaded"], true, "the default set stays: {details}");
        if sets[1]["loaded"] == false {
            // Its size stays known.
            assert!(sets[1]["memory_mib"].as_u64().unwrap() > 0, "{details}");
            unloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(unloaded, "fp32 was not unloaded by clear_cache");
    assert_eq!(render(Some("fp32")).await, checkpoint_image);

    let mut unknown = small_job(KEY, &face);
    unknown["model_id"] = json!("dreamy");
    let v = post(&submit, &unknown).await;
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(
        v["message"]["model_id"][0],
        "The model id dreamy is not configured on this server; it serves tiny, fp32 (leave model_id out for tiny)."
    );
}
