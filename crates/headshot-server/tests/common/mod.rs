//! Test harness: the real router on loopback with a scripted test double of the generator,
//! a loopback "internet" serving face images and receiving webhooks, and JSON helpers.
#![allow(dead_code, unused_imports)]

use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use headshot_server::{serve, AppState, Config, Stores};
pub use headshot_test_support::wire::META_KEYS;
pub use headshot_test_support::{Gate, ScriptedFaces, ScriptedGenerator, StepGate};
use headshot_worker::Stages;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub const KEY: &str = "test-key";

/// A small valid PNG (a stand-in face photo; the scripted stages do not look at it).
pub fn face_png() -> Vec<u8> {
    png_of_size(96, 96)
}

pub fn png_of_size(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// The loopback "internet": face images, redirects, and a webhook receiver.
pub struct Internet {
    pub addr: SocketAddr,
    pub webhooks: mpsc::UnboundedReceiver<Value>,
}

#[derive(Clone)]
struct InternetState {
    webhooks: mpsc::UnboundedSender<Value>,
    webhook_failures_left: Arc<AtomicUsize>,
}

impl Internet {
    /// `webhook_failures`: how many webhook POSTs answer 500 before one succeeds.
    pub async fn start(webhook_failures: usize) -> Internet {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = InternetState {
            webhooks: tx,
            webhook_failures_left: Arc::new(AtomicUsize::new(webhook_failures)),
        };
        let router = Router::new()
            .route(
                "/face.png",
                get(|| async { ([(header::CONTENT_TYPE, "image/png")], face_png()) }),
            )
            .route("/big.png", get(|| async { png_of_size(1500, 1500) }))
            .route("/not-an-image.txt", get(|| async { "hello, I am text" }))
            .route("/missing.png", get(|| async { StatusCode::NOT_FOUND }))
            .route(
                "/redirect",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/face.png")]) }),
            )
            .route(
                "/redirect-loop",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/redirect-loop")]) }),
            )
            .route("/webhook", post(receive_webhook))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Internet { addr, webhooks: rx }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next webhook body (fails the test after a generous limit).
    pub async fn next_webhook(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(60), self.webhooks.recv())
            .await
            .expect("no webhook arrived")
            .expect("webhook channel closed")
    }
}

async fn receive_webhook(State(state): State<InternetState>, body: Bytes) -> impl IntoResponse {
    let left = state.webhook_failures_left.load(Ordering::SeqCst);
    if left > 0 {
        state
            .webhook_failures_left
            .store(left - 1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let body: Value = serde_json::from_slice(&body).expect("webhook body is JSON");
    let _ = state.webhooks.send(body);
    StatusCode::OK
}

/// The server under test, on loopback.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub generator: ScriptedGenerator,
    /// The prepare stage's double: every face photo that reached it.
    pub faces: ScriptedFaces,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    pub fn config(data_dir: PathBuf) -> Config {
        let mut config = Config::for_tests(data_dir, &[KEY]);
        config.allow_private_urls = true;
        config.webhook_backoff_ms = 10;
        config
    }

    /// A server with default test settings changed by `edit`.
    pub async fn start(generator: ScriptedGenerator, edit: impl FnOnce(&mut Config)) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let mut server = Self::start_in(tmp.path().to_path_buf(), generator, edit).await;
        server._tmp = Some(tmp);
        server
    }

    /// A server on an existing data folder (restart tests).
    pub async fn start_in(
        data_dir: PathBuf,
        generator: ScriptedGenerator,
        edit: impl FnOnce(&mut Config),
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Self::config(data_dir.clone());
        config.public_base_url = Some(format!("http://{addr}"));
        edit(&mut config);
        let stores = Stores::open(&config).unwrap();
        let faces = ScriptedFaces::default();
        // An API node (`--role api`) loads no models: it only queues for the workers.
        let stages = config
            .cluster
            .role
            .generates()
            .then(|| Stages::new(Arc::new(faces.clone()), Box::new(generator.clone())));
        let state =
            AppState::for_role(&config, stages, stores, Some(Arc::new(faces.clone()))).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let serve_state = state.clone();
        let task = tokio::spawn(async move {
            serve(listener, serve_state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            state,
            generator,
            faces,
            data_dir,
            shutdown: Some(tx),
            task: Some(task),
            _tmp: None,
        }
    }

    /// Starts the graceful shutdown (the drain) without waiting for it; `stop` then waits.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Graceful shutdown; waits until the server has released its stores.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        self._tmp.take()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = client()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> (u16, Value) {
        let response = client()
            .post(self.url(path))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        decode(client().get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn submit(&self, body: &Value) -> Value {
        let (status, body) = self.post("/api/v6/image_editing/head_shot", body).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn fetch(&self, id: u64) -> Value {
        self.fetch_as(KEY, id).await
    }

    /// Fetch with another API key.
    pub async fn fetch_as(&self, key: &str, id: u64) -> Value {
        let (status, body) = self
            .post(
                &format!("/api/v6/image_editing/fetch/{id}"),
                &serde_json::json!({"key": key}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Fetches until the job is no longer processing (generous limit; no timing asserted).
    pub async fn fetch_until_done(&self, id: u64) -> Value {
        for _ in 0..600 {
            let body = self.fetch(id).await;
            if body["status"] != "processing" {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {id} never finished");
    }
}

/// Lets `n` more steps run and waits until `done` steps in all are done.
pub async fn step(steps: &StepGate, n: usize, done: usize) {
    steps.allow(n);
    let steps = steps.clone();
    tokio::task::spawn_blocking(move || steps.wait_done(done))
        .await
        .unwrap();
}

/// Fetches until `check` holds (a bounded wait; no timing is asserted).
pub async fn fetch_until(server: &TestServer, id: u64, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..1000 {
        let body = server.fetch(id).await;
        if check(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "job {id} never reached the expected state: {}",
        server.fetch(id).await
    );
}

/// A good submit body with its face served by `internet`.
pub fn body(internet: &Internet) -> Value {
    serde_json::json!({"key": KEY, "prompt": "pretty woman", "face_image": internet.url("/face.png"), "seed": 42})
}

/// `body` with `field` set to `value`.
pub fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

/// A fetch answer without the progress extension (`progress`, `queue_position`, `eta`), to
/// compare with the documented shape.
pub fn documented_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(object) = v.as_object_mut() {
        for extension in ["progress", "queue_position", "eta"] {
            object.remove(extension);
        }
    }
    v
}

/// Sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

pub fn sorted(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The documented keys of a success body, and our `face_similarity` and `faces_found` (issue 14).
pub const SUCCESS_KEYS: [&str; 9] = [
    "face_similarity",
    "faces_found",
    "generationTime",
    "id",
    "meta",
    "nsfw_content_detected",
    "output",
    "proxy_links",
    "status",
];
pub const PROCESSING_KEYS: [&str; 10] = [
    "eta",
    "fetch_result",
    "future_links",
    "id",
    "message",
    "meta",
    "output",
    "proxy_links",
    "status",
    "tip",
];

/// The Prometheus text of `url` (a server's `/metrics`).
pub async fn metrics_text(url: &str) -> String {
    let response = client().get(url).send().await.unwrap();
    response.text().await.unwrap()
}

/// Downloads a URL we handed out; (status, bytes).
pub async fn download(url: &str) -> (u16, Vec<u8>) {
    let response = client().get(url).send().await.unwrap();
    (
        response.status().as_u16(),
        response.bytes().await.unwrap().to_vec(),
    )
}
