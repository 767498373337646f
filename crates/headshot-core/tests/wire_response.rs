//! Every response shape of wire.md, asserted key by key.

use headshot_core::wire::*;
use headshot_test_support::wire::META_KEYS;
use serde_json::{json, Value};

fn meta() -> Meta {
    let body = json!({"prompt": "p", "face_image": "https://example.com/f.jpg", "seed": 5});
    HeadShotRequest::from_json(&body, 0).unwrap().meta("abc")
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

fn json_of(r: impl Into<WireResponse>) -> Value {
    r.into().to_json()
}

#[test]
fn success_shape() {
    let urls = vec!["http://h/outputs/abc-0.png".to_string()];
    let v = json_of(SuccessResponse::new(32, 7.25, urls.clone(), false, meta()));
    assert_eq!(
        keys(&v),
        [
            "generationTime",
            "id",
            "meta",
            "nsfw_content_detected",
            "output",
            "proxy_links",
            "status"
        ]
    );
    assert_eq!(v["status"], "success");
    assert_eq!(v["generationTime"], 7.25);
    assert_eq!(v["id"], 32);
    assert_eq!(v["output"], json!(urls));
    assert_eq!(v["proxy_links"], json!(urls));
    assert_eq!(v["nsfw_content_detected"], false);
    assert_eq!(keys(&v["meta"]), META_KEYS);
    assert_eq!(v["meta"]["seed"], 5);
    assert_eq!(v["meta"]["outdir"], "out");
    assert_eq!(v["meta"]["temp"], "yes");
    assert_eq!(v["meta"]["safety_checker"], "yes");
    assert_eq!(v["meta"]["base64"], "no");
    assert_eq!(v["meta"]["file_prefix"], "abc");
}

#[test]
fn processing_shape() {
    let v = json_of(ProcessingResponse::new(
        7,
        12.0,
        "http://h/api/v6/image_editing/fetch/7".into(),
        vec!["http://h/outputs/abc-0.png".into()],
        meta(),
    ));
    assert_eq!(
        keys(&v),
        [
            "eta",
            "fetch_result",
            "future_links",
            "id",
            "message",
            "meta",
            "output",
            "proxy_links",
            "status",
            "tip"
        ]
    );
    assert_eq!(v["status"], "processing");
    assert_eq!(v["message"], "Try to fetch request after seconds estimated");
    assert_eq!(v["eta"], 12.0);
    assert_eq!(v["id"], 7);
    assert_eq!(v["output"], json!([]));
    assert_eq!(v["proxy_links"], json!([]));
    assert_eq!(v["future_links"], json!(["http://h/outputs/abc-0.png"]));
    assert!(v["tip"].as_str().unwrap().contains("/fetch/7"));
    assert_eq!(keys(&v["meta"]), META_KEYS);
}

#[test]
fn fetch_shapes() {
    let v = json_of(FetchSuccessResponse::new(3, vec!["u".into()]));
    assert_eq!(v, json!({"status": "success", "id": 3, "output": ["u"]}));
    let v = json_of(FetchProcessingResponse::new(3));
    assert_eq!(
        v,
        json!({"status": "processing", "id": 3, "message": "try again later.", "output": ""})
    );
    let v = json_of(NotFoundResponse::new());
    assert_eq!(
        v,
        json!({"status": "failed", "id": "", "message": "Request not found", "output": ""})
    );
}

#[test]
fn fetch_progress_extends_the_processing_shape() {
    let base =
        json!({"status": "processing", "id": 3, "message": "try again later.", "output": ""});
    let mut waiting = base.clone();
    waiting["queue_position"] = json!(2);
    waiting["eta"] = json!(4.5);
    assert_eq!(
        json_of(FetchProcessingResponse::waiting(3, 2, 4.5)),
        waiting
    );
    let mut running = base;
    running["progress"] = json!({"step": 5, "total": 21});
    running["eta"] = json!(1.0);
    assert_eq!(
        json_of(FetchProcessingResponse::running(3, 5, 21, 1.0)),
        running
    );
}

#[test]
fn cancel_and_clear_queue_shapes() {
    assert_eq!(
        json_of(CancelResponse::new(9)),
        json!({"status": "success", "id": 9, "message": "Job cancelled"})
    );
    assert_eq!(
        json_of(ClearQueueResponse::new(2)),
        json!({"status": "success", "message": "Queue cleared", "cancelled": 2})
    );
}

#[test]
fn error_shapes() {
    let v = json_of(InvalidKeyResponse::new());
    assert_eq!(keys(&v), ["message", "status", "tip"]);
    assert_eq!(v["status"], "error");
    assert_eq!(v["message"], "Invalid Api Key");
    assert!(v["tip"].is_string());

    let mut errors = ValidationErrors::new();
    errors.add("prompt", "The prompt field is required.");
    errors.add("face_image", "The face image field is required.");
    let v = json_of(ValidationErrorResponse::new(&errors));
    assert_eq!(
        v,
        json!({"status": "error", "message": {
            "prompt": ["The prompt field is required."],
            "face_image": ["The face image field is required."]}})
    );

    let v = json_of(FailedResponse::new(9, "no face"));
    assert_eq!(
        v,
        json!({"status": "failed", "id": 9, "message": "no face", "output": ""})
    );

    let v = json_of(RateLimitResponse::new(16, 30));
    assert_eq!(
        v,
        json!({"status": "error", "message": "Rate limit exceeded. Maximum 16 queued requests allowed.", "retry_after": 30})
    );

    let v = json_of(ErrorResponse::new("bad json"));
    assert_eq!(v, json!({"status": "error", "message": "bad json"}));
}

#[test]
fn webhook_bodies_echo_track_id() {
    let body = SuccessResponse::new(4, 1.5, vec!["u".into()], true, meta());
    for track_id in [json!(123), json!("t-1"), Value::Null] {
        let v = serde_json::to_value(WebhookSuccess {
            body: body.clone(),
            track_id: track_id.clone(),
        })
        .unwrap();
        assert_eq!(
            keys(&v),
            [
                "generationTime",
                "id",
                "meta",
                "nsfw_content_detected",
                "output",
                "proxy_links",
                "status",
                "track_id"
            ]
        );
        assert_eq!(v["track_id"], track_id);
        assert_eq!(v["nsfw_content_detected"], true);
    }
    let v = serde_json::to_value(WebhookFailed::new(4, "no face", Some(json!(8)))).unwrap();
    assert_eq!(
        v,
        json!({"status": "failed", "id": 4, "message": "no face", "track_id": 8})
    );
}

#[test]
fn meta_round_trips_through_json() {
    let m = meta();
    let back: Meta = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
    assert_eq!(back, m);
}
