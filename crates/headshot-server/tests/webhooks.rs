//! Webhooks: Standard Webhooks signatures (verified by the `standardwebhooks` Python package),
//! a `webhook-id` stable across retries and restarts, permanent errors not retried, deliveries
//! resumed after a restart, and the failure webhook of a job failed at start-up.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One POST the receiver saw.
#[derive(Debug, Clone)]
struct Attempt {
    headers: HeaderMap,
    body: String,
    answered: u16,
}

impl Attempt {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver whose answer the test sets (200, 503, 400, ...).
struct Receiver {
    url: String,
    answer: Arc<AtomicU16>,
    attempts: mpsc::UnboundedReceiver<Attempt>,
}

#[derive(Clone)]
struct ReceiverState {
    answer: Arc<AtomicU16>,
    attempts: mpsc::UnboundedSender<Attempt>,
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answered = state.answer.load(Ordering::SeqCst);
    let body = String::from_utf8(body.to_vec()).unwrap();
    let _ = state.attempts.send(Attempt {
        headers,
        body,
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

impl Receiver {
    async fn start(answer: u16) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let answer = Arc::new(AtomicU16::new(answer));
        let state = ReceiverState {
            answer: answer.clone(),
            attempts: tx,
        };
        let router = Router::new()
            .route("/hook", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Receiver {
            url,
            answer,
            attempts: rx,
        }
    }

    async fn next(&mut self) -> Attempt {
        tokio::time::timeout(Duration::from_secs(60), self.attempts.recv())
            .await
            .expect("no webhook arrived")
            .unwrap()
    }
}

fn submit_body(internet: &Internet, webhook: &str, track_id: Value) -> Value {
    json!({"key": KEY, "prompt": "p", "face_image": internet.url("/face.png"),
           "webhook": webhook, "track_id": track_id})
}

/// Checks the signatures with the `standardwebhooks` package (skipped loudly without it,
/// a failure when HEADSHOT_E2E_REQUIRED=1).
fn verify_with_standardwebhooks(attempts: &[Attempt]) {
    let python = std::env::var("HEADSHOT_E2E_PYTHON").unwrap_or_else(|_| "python3".into());
    let available = Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        let why = format!(
            "{python} cannot import standardwebhooks (pip install standardwebhooks==1.1.0)"
        );
        if std::env::var("HEADSHOT_E2E_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("signature verification required but {why}");
        }
        eprintln!("\n\n!!!!!!!!!! SKIPPED standardwebhooks verification: {why} !!!!!!!!!!\n\n");
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    let lines: Vec<String> = attempts
        .iter()
        .map(|a| {
            let headers: serde_json::Map<String, Value> = a
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap())))
                .collect();
            json!({"headers": headers, "body": a.body}).to_string()
        })
        .collect();
    std::fs::write(file.path(), lines.join("\n")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/verify_webhooks.py");
    let status = Command::new(&python)
        .arg(script)
        .arg(SECRET)
        .arg(file.path())
        .status()
        .unwrap();
    assert!(status.success(), "standardwebhooks rejected a signature");
}

#[tokio::test]
async fn signed_with_one_id_across_retries_and_verified_independently() {
    let internet = Internet::start(0).await;
    let mut receiver = Receiver::start(503).await;
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.webhook_secret = Some(SECRET.parse().unwrap());
    })
    .await;
    let v = server
        .submit(&submit_body(&internet, &receiver.url, json!("t-1")))
        .await;
    assert_eq!(v["status"], "success");
    let first = receiver.next().await;
    let second = receiver.next().await;
    receiver.answer.store(200, Ordering::SeqCst);
    let mut attempts = vec![first, second];
    loop {
        let a = receiver.next().await;
        let done = a.answered == 200;
        attempts.push(a);
        if done {
            break;
        }
    }
    let id = attempts[0].header("webhook-id").to_string();
    assert!(id.starts_with("msg_"), "{id}");
    for a in &attempts {
        assert_eq!(
            a.header("webhook-id"),
            id,
            "the id is stable across retries"
        );
        assert!(a.header("webhook-signature").starts_with("v1,"));
        assert!(a.header("webhook-timestamp").parse::<u64>().is_ok());
        assert_eq!(a.body, attempts[0].body);
        assert_eq!(a.json()["track_id"], "t-1");
        assert_eq!(a.json()["id"], v["id"]);
    }
    verify_with_standardwebhooks(&attempts);
    server.stop().await;
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let internet = Internet::start(0).await;
    let mut receiver = Receiver::start(400).await;
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.webhook_backoff_ms = 50;
    })
    .await;
    server
        .submit(&submit_body(&internet, &receiver.url, json!(1)))
        .await;
    assert_eq!(receiver.next().await.answered, 400);
    // Given up at once: the outbox empties without a second attempt.
    let jobs = server.state.jobs.jobs.clone();
    for _ in 0..600 {
        if jobs.pending_webhooks().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(jobs.pending_webhooks().unwrap().is_empty());
    assert!(receiver.attempts.try_recv().is_err(), "a 400 was retried");
    server.stop().await;
}

#[tokio::test]
async fn a_pending_webhook_is_delivered_after_a_restart() {
    let internet = Internet::start(0).await;
    let mut receiver = Receiver::start(503).await;
    // The first run retries only after a minute, so the delivery is pending when it stops.
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.webhook_backoff_ms = 60_000;
        c.webhook_secret = Some(SECRET.parse().unwrap());
    })
    .await;
    let v = server
        .submit(&submit_body(&internet, &receiver.url, json!("order-7")))
        .await;
    let refused = receiver.next().await;
    assert_eq!(refused.answered, 503);
    let data_dir = server.data_dir.clone();
    let tmp = server.stop().await;

    receiver.answer.store(200, Ordering::SeqCst);
    let again = TestServer::start_in(data_dir, ScriptedGenerator::default(), |c| {
        c.webhook_secret = Some(SECRET.parse().unwrap());
    })
    .await;
    let delivered = receiver.next().await;
    assert_eq!(delivered.answered, 200);
    assert_eq!(delivered.header("webhook-id"), refused.header("webhook-id"));
    assert_eq!(delivered.body, refused.body);
    assert_eq!(delivered.json()["id"], v["id"]);
    assert_eq!(delivered.json()["track_id"], "order-7");
    verify_with_standardwebhooks(&[refused, delivered]);
    again.stop().await;
    drop(tmp);
}

#[tokio::test]
async fn a_job_failed_at_start_up_sends_its_failure_webhook() {
    let mut receiver = Receiver::start(200).await;
    let tmp = tempfile::tempdir().unwrap();
    let id = {
        // A record whose inputs are gone (as a version before inputs were kept would leave).
        let stores =
            headshot_server::Stores::open_local(tmp.path(), Duration::from_secs(3600)).unwrap();
        let id = stores.jobs.next_id().unwrap();
        let mut record = headshot_core::store::JobRecord::queued(
            id,
            json!({}),
            "0123456789abcdef0123456789abcdef",
            headshot_core::store::OutputFormat::Png,
            1,
        );
        record.webhook = Some(receiver.url.clone());
        record.track_id = Some(json!(99));
        stores.jobs.insert(&record).unwrap();
        id
    };
    let server = TestServer::start_in(
        tmp.path().to_path_buf(),
        ScriptedGenerator::default(),
        |_| {},
    )
    .await;
    let hook = receiver.next().await.json();
    assert_eq!(hook["status"], "failed", "{hook}");
    assert_eq!(hook["id"], id);
    assert_eq!(hook["track_id"], 99);
    assert!(hook["message"]
        .as_str()
        .unwrap()
        .contains("inputs were not kept"));
    assert_eq!(server.fetch(id).await["status"], "failed");
    server.stop().await;
}
