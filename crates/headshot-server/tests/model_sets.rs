//! `--model-set`: the real binary with the tiny set as `--models` and the single-file fp32
//! checkpoint (rebuilt from tests/fixtures/tiny/single-file) as `fp32`. A request's `model_id`
//! picks the set: `fp32` renders the checkpoint (another image than the default, the same one
//! every time), the default set's name or no `model_id` the tiny set, an unknown id the
//! validation error naming what is served. The pipeline's own tests (headshot-pipeline
//! tests/model_sets.rs) hold each set to diffusers' images.

mod common;
mod real_binary;

use common::{client, download};
use real_binary::*;
use serde_json::{json, Value};

const KEY: &str = "sets-key";

async fn post(url: &str, body: &Value) -> Value {
    let response = client().post(url).json(body).send().await.unwrap();
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
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

    let checkpoint_image = render(Some("fp32")).await;
    let default_image = render(None).await;
    assert_ne!(
        checkpoint_image, default_image,
        "fp32 rendered the default set"
    );
    assert_eq!(render(Some("tiny")).await, default_image);
    // Back to the checkpoint (loaded again after the default's turn or still resident): the
    // same seed gives the same image.
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
