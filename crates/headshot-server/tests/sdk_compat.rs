//! The official Python SDK (`modelslab-py`) against the real router with the scripted generator
//! double: proves wire compatibility without model files. The same driver runs against the
//! real binary and models in e2e_sdk.rs. Skipped loudly when python/modelslab-py is missing
//! (a failure instead when HEADSHOT_E2E_REQUIRED=1).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn python_with_sdk() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("HEADSHOT_E2E_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["python3".into(), "python".into()],
    };
    candidates.into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import modelslab_py"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

async fn run_driver(python: &str, server: &TestServer) {
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/sdk_headshot.py");
    let face = std::env::temp_dir().join(format!("headshot-sdk-face-{}.png", server.addr.port()));
    std::fs::write(&face, face_png()).unwrap();
    let mut command = Command::new(python);
    command
        .arg(driver)
        .arg(format!("http://{}", server.addr))
        .arg(KEY)
        .arg(&face);
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_file(face);
    assert!(
        status.success(),
        "tests/e2e/sdk_headshot.py failed (see its output above)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_against_the_router() {
    let Some(python) = python_with_sdk() else {
        let why =
            "no python with modelslab-py (install: python3 -m pip install modelslab-py==0.2.3 requests)";
        if std::env::var("HEADSHOT_E2E_REQUIRED").is_ok_and(|v| v == "1") {
            panic!("SDK compatibility test required but {why}");
        }
        eprintln!("\n\n!!!!!!!!!! SKIPPED official_sdk_against_the_router: {why} !!!!!!!!!!\n\n");
        return;
    };
    // Answered within the synchronous wait.
    let server = TestServer::start(ScriptedGenerator::default(), |_| {}).await;
    run_driver(&python, &server).await;
    // Always `processing` first, then the SDK's fetch loop.
    let server = TestServer::start(ScriptedGenerator::default(), |c| c.sync_wait_secs = 0.0).await;
    run_driver(&python, &server).await;
}
