//! Request ids (`x-request-id` kept or made, sent back, on every log line of the request and
//! of its job, the device thread's included) and CORS for allowed browser origins.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ORIGIN};
use serde_json::Value;

const SUBMIT: &str = "/api/v6/image_editing/head_shot";

/// Every log line of this test binary, as the plain fmt layer writes them.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("info")
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

fn log_lines_with(needle: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_mark_every_log_line_of_the_job() {
    logs();
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;

    let response = client()
        .post(server.url(SUBMIT))
        .header("x-request-id", "client-req-7")
        .json(&body(&internet))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-req-7");
    let v: Value = response.json().await.unwrap();
    assert_eq!(v["status"], "success", "{v}");

    // The route's lines and the job's, from the prepare and device threads too.
    let lines = log_lines_with("request_id=client-req-7");
    for message in ["job admitted", "job started", "job done"] {
        assert!(
            lines.iter().any(|l| l.contains(message)),
            "no '{message}' line with the request id in:\n{}",
            lines.join("\n")
        );
    }

    // No id, or one that is not a plain token: a new random one.
    let made = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_string();
    let a = client().get(server.url("/health")).send().await.unwrap();
    let b = client()
        .get(server.url("/health"))
        .header("x-request-id", "two words")
        .send()
        .await
        .unwrap();
    let (a, b) = (made(&a), made(&b));
    assert_eq!(a.len(), 32);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
    assert_ne!(a, b);
    assert_ne!(b, "two words");
}

#[tokio::test]
async fn allowed_origins_get_cors_answers_and_others_none() {
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.cors_allow_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let preflight = client()
        .request(reqwest::Method::OPTIONS, server.url(SUBMIT))
        .header(ORIGIN, "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, key")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 204);
    assert_eq!(
        preflight.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed_headers = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed_headers.contains("key"), "{allowed_headers}");

    let from_app = client()
        .get(server.url("/health"))
        .header(ORIGIN, "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        from_app.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    let from_elsewhere = client()
        .get(server.url("/health"))
        .header(ORIGIN, "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(from_elsewhere
        .headers()
        .get(ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());

    // Off by default.
    let plain = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let response = client()
        .get(plain.url("/health"))
        .header(ORIGIN, "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(response
        .headers()
        .get(ACCESS_CONTROL_ALLOW_ORIGIN)
        .is_none());
}
