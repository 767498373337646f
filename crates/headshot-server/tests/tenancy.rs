//! Two API keys: each reads only the jobs it submitted; the other key's ids answer exactly like
//! ids that do not exist, on every fetch path. Records keep a keyed fingerprint, not the key.

mod common;

use common::*;
use serde_json::{json, Value};

const OTHER: &str = "second-tenant-key-7f3a";

fn not_found() -> Value {
    json!({"status": "failed", "id": "", "message": "Request not found", "output": ""})
}

#[tokio::test]
async fn a_key_reads_only_its_own_jobs() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.api_keys = vec![KEY.to_string(), OTHER.to_string()];
    })
    .await;
    let body =
        |key: &str| json!({"key": key, "prompt": "p", "face_image": internet.url("/face.png")});
    let mine = server.submit(&body(KEY)).await;
    let theirs = server.submit(&body(OTHER)).await;
    assert_eq!(
        (&mine["status"], &theirs["status"]),
        (&json!("success"), &json!("success"))
    );
    let (mine, theirs) = (mine["id"].as_u64().unwrap(), theirs["id"].as_u64().unwrap());

    assert_eq!(server.fetch_as(KEY, mine).await["status"], "success");
    assert_eq!(server.fetch_as(OTHER, theirs).await["status"], "success");
    assert_eq!(server.fetch_as(OTHER, mine).await, not_found());
    assert_eq!(server.fetch_as(KEY, theirs).await, not_found());
    // The same on the other fetch paths and with the key in a header.
    for path in [
        format!("/api/v3/fetch/{mine}"),
        format!("/api/v6/images/fetch/{mine}"),
    ] {
        let (_, v) = server.post(&path, &json!({"key": OTHER})).await;
        assert_eq!(v, not_found(), "{path}");
        let (_, v) = server.get(&format!("{path}?key={OTHER}")).await;
        assert_eq!(v, not_found(), "GET {path}");
    }
    let (_, v) = server
        .post(
            "/api/v6/images/fetch",
            &json!({"key": OTHER, "request_id": mine}),
        )
        .await;
    assert_eq!(v, not_found());
    let response = client()
        .post(server.url(&format!("/api/v6/image_editing/fetch/{mine}")))
        .header("Authorization", format!("Bearer {OTHER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap(), not_found());

    // Neither key is written to the job database; a fingerprint is.
    let data_dir = server.data_dir.clone();
    let tmp = server.stop().await;
    let db = std::fs::read(data_dir.join("jobs.redb")).unwrap();
    for key in [KEY, OTHER] {
        assert!(
            !db.windows(key.len()).any(|w| w == key.as_bytes()),
            "the raw key {key} is stored"
        );
    }
    // Scoping survives a restart (the fingerprint secret is kept in the store).
    let again = TestServer::start_in(data_dir, ScriptedGenerator::default(), |c| {
        c.api_keys = vec![KEY.to_string(), OTHER.to_string()];
    })
    .await;
    assert_eq!(again.fetch_as(KEY, mine).await["status"], "success");
    assert_eq!(again.fetch_as(OTHER, mine).await, not_found());
    again.stop().await;
    drop(tmp);
}
