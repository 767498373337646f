//! The real `headshot-server` binary on loopback with the tiny model set (models/tiny.toml).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The face test assets (fetched by tools/fetch-test-assets.sh when missing).
pub fn test_assets(root: &Path) -> PathBuf {
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

/// A running server process, killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary with the tiny models, listening on `port`, keeping its data in `data_dir`.
pub fn tiny_server_command(port: u16, key: &str, data_dir: &Path) -> Command {
    let root = repo_root();
    let assets = test_assets(&root);
    let mut command = Command::new(env!("CARGO_BIN_EXE_headshot-server"));
    command
        .current_dir(&root)
        .env("HEADSHOT_TEST_ASSETS", &assets)
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--api-keys",
            key,
            "--allow-private-urls",
        ])
        .args(["--models", "models/tiny.toml"])
        .arg("--data-dir")
        .arg(data_dir);
    if headshot_face::onnxruntime_in_folder(&assets).is_some() {
        // The folder itself: the server picks the library in it.
        command.arg("--onnxruntime-library").arg(&assets);
    }
    command
}

pub fn wait_healthy(server: &mut Server, base: &str) {
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

/// A minimal blocking GET (std only, so callers need no async runtime).
pub fn http_get(url: &str) -> std::io::Result<String> {
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
