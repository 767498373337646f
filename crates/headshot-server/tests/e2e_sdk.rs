//! End-to-end: the real `headshot-server` binary on loopback with the tiny model set
//! (models/tiny.toml), driven by the official Python SDK `modelslab-py` and the documented
//! example body (tests/e2e/sdk_headshot.py).
//!
//! Needs: python with `modelslab-py` (CI: `python3 -m pip install modelslab-py==0.2.3 requests`; pick the
//! interpreter with HEADSHOT_E2E_PYTHON), and the face test assets (fetched by
//! tools/fetch-test-assets.sh when missing). Without python/modelslab-py the test is skipped
//! with a loud message, unless HEADSHOT_E2E_REQUIRED=1 (CI), where that is a failure.
//! HEADSHOT_SKIP_E2E=1 skips it (loudly) during quick local iterations. On a 2-core CPU the
//! documented example (512x512, 21 steps) takes minutes even with the tiny models.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KEY: &str = "e2e-key";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A python that can import modelslab_py, or why there is none.
fn python_with_sdk() -> Result<String, String> {
    let candidates: Vec<String> = match std::env::var("HEADSHOT_E2E_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["python3".into(), "python".into()],
    };
    for python in &candidates {
        let ok = Command::new(python)
            .args(["-c", "import modelslab_py"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(python.clone());
        }
    }
    Err(format!(
        "none of {candidates:?} can `import modelslab_py`; install it with `python3 -m pip install modelslab-py==0.2.3 requests`"
    ))
}

fn test_assets(root: &Path) -> PathBuf {
    let dir = std::env::var_os("HEADSHOT_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/test-assets"));
    if !dir.join("yaoming.jpg").exists() {
        let status = Command::new("bash")
            .arg(root.join("tools/fetch-test-assets.sh"))
            .status()
            .expect("running tools/fetch-test-assets.sh");
        assert!(status.success(), "tools/fetch-test-assets.sh failed");
    }
    dir
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_healthy(server: &mut Server, base: &str) {
    let health = format!("{base}/health");
    for _ in 0..1200 {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("headshot-server exited before becoming healthy: {status}");
        }
        if let Ok(body) = http_get(&health) {
            if body.contains("\"ok\"") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("headshot-server did not become healthy");
}

/// A minimal blocking GET (std only, so this test needs no async runtime).
fn http_get(url: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap();
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn official_sdk_against_the_real_binary() {
    if std::env::var("HEADSHOT_SKIP_E2E").is_ok_and(|v| v == "1") {
        eprintln!("\n\n!!!!!!!!!! SKIPPED official_sdk_against_the_real_binary: HEADSHOT_SKIP_E2E=1 !!!!!!!!!!\n\n");
        return;
    }
    let python = match python_with_sdk() {
        Ok(p) => p,
        Err(why) => {
            if std::env::var("HEADSHOT_E2E_REQUIRED").is_ok_and(|v| v == "1") {
                panic!("e2e SDK test required but: {why}");
            }
            eprintln!(
                "\n\n!!!!!!!!!! SKIPPED official_sdk_against_the_real_binary: {why} !!!!!!!!!!\n\n"
            );
            return;
        }
    };
    let root = repo_root();
    let assets = test_assets(&root);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_headshot-server"));
    command
        .current_dir(&root)
        .env("HEADSHOT_TEST_ASSETS", &assets)
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--api-keys",
            KEY,
            "--allow-private-urls",
        ])
        .args(["--models", "models/tiny.toml", "--sync-wait-secs", "120"])
        .arg("--data-dir")
        .arg(data.path());
    if headshot_face::onnxruntime_in_folder(&assets).is_some() {
        // The folder itself: the server picks the library in it.
        command.arg("--onnxruntime-library").arg(&assets);
    }
    let mut server = Server(command.spawn().expect("starting headshot-server"));
    wait_healthy(&mut server, &base);

    let status = Command::new(&python)
        .arg(root.join("tests/e2e/sdk_headshot.py"))
        .args([&base, KEY])
        .arg(assets.join("yaoming.jpg"))
        .status()
        .expect("running the python driver");
    assert!(
        status.success(),
        "tests/e2e/sdk_headshot.py failed (see its output above)"
    );
}
