//! Running the real `headshot-server` binary with the tiny model set (models/tiny.toml), for
//! tests that must see the process as deployed: its own runtime, ONNX Runtime, the listener.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

// Not every test binary that includes this module uses both.
#[allow(unused_imports)]
pub use headshot_test_support::services::{free_port, skip_or_fail};
pub use headshot_test_support::{test_assets, workspace as repo_root};

/// The binary's arguments for the tiny model set on `port` with one key; callers add more.
pub fn tiny_server_args(
    root: &Path,
    assets: &Path,
    port: u16,
    key: &str,
    data: &Path,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--bind".to_string(),
        format!("127.0.0.1:{port}"),
        "--api-keys".to_string(),
        key.to_string(),
        "--models".to_string(),
        root.join("models/tiny.toml").display().to_string(),
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push("--data-dir".into());
    args.push(data.into());
    if headshot_face::onnxruntime_in_folder(assets).is_some() {
        // The folder itself: the server picks the library in it.
        args.push("--onnxruntime-library".into());
        args.push(assets.into());
    }
    args
}

/// The binary with the tiny models on `port`, keeping its data in `data`, private URLs allowed
/// (the tests' webhook receivers and face hosts are on loopback); callers add more arguments.
pub fn tiny_server_command(port: u16, key: &str, data: &Path) -> Command {
    let root = repo_root();
    let assets = test_assets();
    let mut command = Command::new(server_binary());
    command
        .current_dir(&root)
        .env("HEADSHOT_TEST_ASSETS", &assets)
        .args(tiny_server_args(&root, &assets, port, key, data))
        .arg("--allow-private-urls");
    command
}

/// The binary cargo built, or HEADSHOT_SERVER_BINARY (to check an installed or older build).
pub fn server_binary() -> PathBuf {
    std::env::var_os("HEADSHOT_SERVER_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_headshot-server")))
}

/// A child process killed (and reaped) when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Starts `command` (with HEADSHOT_TEST_ASSETS set, in the repository root).
    pub fn spawn(mut command: Command, assets: &Path) -> Running {
        command
            .current_dir(repo_root())
            .env("HEADSHOT_TEST_ASSETS", assets);
        Running(command.spawn().expect("starting headshot-server"))
    }

    /// Waits until `GET {base}/health` answers `ok` (generous limit: models load first).
    pub fn wait_healthy(&mut self, base: &str) {
        let health = format!("{base}/health");
        for _ in 0..1200 {
            if let Some(status) = self.0.try_wait().unwrap() {
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
}

/// A minimal blocking GET (std only, so a test needs no async runtime for it).
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

/// The test photo with one face (yaoming.jpg) as a `data:` URI, as clients send it inline.
pub fn face_data_uri() -> String {
    use base64::Engine as _;
    let photo = std::fs::read(test_assets().join("yaoming.jpg")).expect("the test photo");
    format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(photo)
    )
}

/// A good, small job (64x64, the fewest steps, one sample) on `face_image`: seconds on a CPU.
pub fn small_job(key: &str, face_image: &str) -> serde_json::Value {
    serde_json::json!({
        "key": key,
        "prompt": "a portrait photo",
        "face_image": face_image,
        "width": 64,
        "height": 64,
        "num_inference_steps": 21,
        "samples": 1,
        "seed": 7,
    })
}
