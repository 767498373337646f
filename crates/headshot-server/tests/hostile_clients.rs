//! Slow, greedy and sloppy clients against the real router and connection loop: header and
//! body read timeouts, the connection cap, the body budget, the key checked before the body,
//! and the smaller wrong answers of issue 12 (each in the documented error shape).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SUBMIT: &str = "/api/v6/image_editing/head_shot";
/// A guard against hanging, never a timing assertion.
const GUARD: Duration = Duration::from_secs(30);

/// Reads what the server sends until it closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut answer))
        .await
        .expect("the server kept a stalled connection open")
        .unwrap_or_default();
    String::from_utf8_lossy(&answer).into_owned()
}

fn json_body_of(raw_response: &str) -> Value {
    let (_, body) = raw_response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {raw_response:?}"));
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

#[tokio::test]
async fn unfinished_headers_are_disconnected() {
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.header_read_timeout_secs = 1;
    })
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(format!("POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-").as_bytes())
        .await
        .unwrap();
    read_to_close(&mut slow).await;
    read_to_close(&mut silent).await;
    // The server still answers others.
    assert_eq!(server.get("/health").await.0, 200);
}

#[tokio::test]
async fn a_stalled_body_is_answered_408() {
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.body_read_timeout_secs = 1;
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{\"prompt\": \"half"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let v = json_body_of(&answer);
    assert_eq!(keys(&v), sorted(&["message", "status"]));
    assert_eq!(v["status"], "error");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_their_turn() {
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.max_connections = 2;
        c.header_read_timeout_secs = 600;
    })
    .await;
    let idle_a = TcpStream::connect(server.addr).await.unwrap();
    let _idle_b = TcpStream::connect(server.addr).await.unwrap();
    let third = tokio::spawn({
        let url = server.url("/health");
        async move { client().get(url).send().await.map(|r| r.status().as_u16()) }
    });
    // Both slots are taken: the third connection sits in the backlog, unanswered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served beside two open ones"
    );
    drop(idle_a);
    let status = tokio::time::timeout(GUARD, third)
        .await
        .expect("never served");
    assert_eq!(status.unwrap().unwrap(), 200);
}

#[tokio::test]
async fn a_wrong_header_key_is_refused_before_the_body_is_read() {
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    for header in ["key: wrong", "Authorization: Bearer wrong"] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        // A 10 MB body is announced; none of it is ever sent.
        stream
            .write_all(
                format!("POST {SUBMIT} HTTP/1.1\r\nHost: x\r\n{header}\r\nContent-Length: 10000000\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(GUARD, stream.read(&mut answer))
            .await
            .expect("the server waited for the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("Invalid Api Key"), "{answer}");
    }
}

/// Sends a request whose body is refused unread, writing the body in pauses as a slow uplink
/// does, and only then reads the answer (as reqwest, requests and the SDKs do). A server that
/// closed as soon as it answered would make the later writes meet a reset, losing the answer.
async fn answer_after_sending_slowly(server: &TestServer, extra_header: &str) -> String {
    const CHUNK: usize = 128 * 1024;
    let chunks = server.state.settings.max_body_bytes / CHUNK + 4;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra_header}Content-Length: {}\r\n\r\n",
                CHUNK * chunks
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    for chunk in 0..chunks {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream
            .write_all(&[b' '; CHUNK])
            .await
            .unwrap_or_else(|e| panic!("chunk {chunk} of the body was refused: {e}"));
    }
    read_to_close(&mut stream).await
}

#[tokio::test]
async fn clients_still_sending_a_refused_body_get_the_answer() {
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.max_image_bytes = 30_000;
    })
    .await;
    let too_large = answer_after_sending_slowly(&server, "").await;
    assert!(too_large.starts_with("HTTP/1.1 413"), "{too_large:?}");
    assert_eq!(json_body_of(&too_large)["status"], "error");

    let wrong_key = answer_after_sending_slowly(&server, "key: wrong\r\n").await;
    assert!(wrong_key.starts_with("HTTP/1.1 200"), "{wrong_key:?}");
    assert_eq!(json_body_of(&wrong_key)["message"], "Invalid Api Key");
}

#[tokio::test]
async fn bodies_beyond_the_budget_wait_for_memory() {
    let internet = Internet::start(0).await;
    // The budget is raised to one largest body (about 1 MB here); a stalled upload that
    // announced that much holds all of it.
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.max_image_bytes = 30_000;
        c.max_body_bytes_in_flight = 1;
    })
    .await;
    let largest = server.state.settings.max_body_bytes;
    let mut hog = TcpStream::connect(server.addr).await.unwrap();
    hog.write_all(
        format!("POST {SUBMIT} HTTP/1.1\r\nHost: x\r\nContent-Length: {largest}\r\n\r\n{{")
            .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let small = tokio::spawn({
        let url = server.url(SUBMIT);
        let b = body(&internet);
        async move {
            client()
                .post(url)
                .json(&b)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !small.is_finished(),
        "a body was read while the budget was spent"
    );
    drop(hog);
    let v = tokio::time::timeout(GUARD, small)
        .await
        .expect("never read")
        .unwrap();
    assert_eq!(v["status"], "success", "{v}");
}

#[tokio::test]
async fn wrong_methods_get_json_405_with_allow() {
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = client()
            .request(method.clone(), server.url(SUBMIT))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "POST", "{method}");
        let v: Value = response.json().await.unwrap();
        assert_eq!(keys(&v), sorted(&["message", "status"]));
        assert_eq!(v["status"], "error");
    }
    let response = client()
        .delete(server.url("/api/v6/image_editing/fetch/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let allow = response.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn bodies_that_are_not_objects_say_so() {
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    for raw in [
        "[]",
        "null",
        "\"text\"",
        "42",
        "true",
        "[{\"key\": \"test-key\"}]",
    ] {
        let (status, v) = server.post_raw(SUBMIT, raw).await;
        assert_eq!(status, 400, "{raw}");
        assert_eq!(keys(&v), sorted(&["message", "status"]));
        let message = v["message"].as_str().unwrap();
        assert!(
            message.contains("must be a JSON object"),
            "{raw}: {message}"
        );
    }
}

#[tokio::test]
async fn a_byte_order_mark_and_lower_case_bearer_are_accepted() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let mut raw = b"\xEF\xBB\xBF".to_vec();
    raw.extend_from_slice(body(&internet).to_string().as_bytes());
    let v: Value = client()
        .post(server.url(SUBMIT))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "success", "{v}");
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let v: Value = client()
            .post(server.url(SUBMIT))
            .header("authorization", format!("{scheme}  {KEY}"))
            .json(&with(body(&internet), "key", json!("")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "success", "{scheme}: {v}");
    }
}

async fn field_error(server: &TestServer, b: &Value, field: &str) -> String {
    let v = server.submit(b).await;
    assert_eq!(keys(&v), sorted(&["message", "status"]), "{v}");
    assert_eq!(v["status"], "error");
    assert_eq!(keys(&v["message"]), [field], "{v}");
    v["message"][field][0].as_str().unwrap().to_string()
}

#[tokio::test]
async fn text_fields_have_configurable_limits() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |c| {
        c.max_prompt_chars = 20;
        c.max_track_id_bytes = 10;
    })
    .await;
    let m = field_error(
        &server,
        &with(body(&internet), "prompt", json!("p".repeat(21))),
        "prompt",
    )
    .await;
    assert!(m.contains("20 characters"), "{m}");
    let m = field_error(
        &server,
        &with(
            body(&internet),
            "negative_prompt",
            json!("n".repeat(10_500_000)),
        ),
        "negative_prompt",
    )
    .await;
    assert!(m.contains("20 characters"), "{m}");
    let m = field_error(
        &server,
        &with(body(&internet), "track_id", json!("t".repeat(11))),
        "track_id",
    )
    .await;
    assert!(m.contains("10 bytes"), "{m}");
    // A 100 KB webhook host: refused at submit, never retried.
    let hook = format!("http://{}.example.com/hook", "h".repeat(100_000));
    let m = field_error(
        &server,
        &with(body(&internet), "webhook", json!(hook)),
        "webhook",
    )
    .await;
    assert!(m.contains("2048 characters"), "{m}");
    assert_eq!(server.generator.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_long_webhook_host_within_the_url_limit_is_refused() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let hook = format!("http://{}.example.com/hook", "h".repeat(1000));
    let m = field_error(
        &server,
        &with(body(&internet), "webhook", json!(hook)),
        "webhook",
    )
    .await;
    assert!(m.contains("host names have at most 253"), "{m}");
}

#[tokio::test]
async fn an_image_over_the_side_limit_is_refused_before_admission() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    // 12001 px wide: few pixels in total, but over the decoder's 12000 px side limit.
    let wide = base64::engine::general_purpose::STANDARD.encode(png_of_size(12_001, 1));
    let m = field_error(
        &server,
        &with(body(&internet), "face_image", json!(wide)),
        "face_image",
    )
    .await;
    assert!(m.contains("12001x1") && m.contains("12000"), "{m}");
    assert_eq!(
        server.generator.calls.load(Ordering::SeqCst),
        0,
        "it took a job slot"
    );
    let (_, v) = server
        .post(
            "/api/v6/images/fetch",
            &json!({"key": KEY, "request_id": 1}),
        )
        .await;
    assert_eq!(
        v["message"], "Request not found",
        "a job record was made: {v}"
    );
}

#[tokio::test]
async fn unknown_outputs_get_the_json_404() {
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    for path in [
        "/outputs/00000000-0000-0000-0000-000000000000-0.png",
        "/outputs/not-a-name",
        "/outputs/..%2Fjobs.redb",
    ] {
        let (status, v) = server.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(keys(&v), sorted(&["message", "status"]), "{path}");
        assert_eq!(v["status"], "error");
    }
}

#[tokio::test]
async fn urls_with_credentials_are_refused_unless_allowed() {
    let internet = Internet::start(0).await;
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    let face = format!("http://user:secret@{}/face.png", internet.addr);
    let m = field_error(
        &server,
        &with(body(&internet), "face_image", json!(face)),
        "face_image",
    )
    .await;
    assert!(m.contains("user name or password"), "{m}");
    let hook = format!("http://user@{}/webhook", internet.addr);
    let m = field_error(
        &server,
        &with(body(&internet), "webhook", json!(hook)),
        "webhook",
    )
    .await;
    assert!(m.contains("user name or password"), "{m}");
    let allowing = TestServer::start(ScriptedGenerator::default(), |c| {
        c.allow_url_credentials = true
    })
    .await;
    let v = allowing
        .submit(&with(body(&internet), "face_image", json!(face)))
        .await;
    assert_eq!(v["status"], "success", "{v}");
}
