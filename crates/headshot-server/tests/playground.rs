//! The playground page in a real browser: headless chromium driven over WebDriver (chromedriver)
//! by selenium scripts in tests/e2e/.
//! - playground_browser.py: against the real `headshot-server` binary with the tiny model set,
//!   it picks a real photo, fills the form, submits it from the page and waits for the images.
//! - playground_progress.py: the page against a scripted API, for answers the tiny server does
//!   not give on demand (fetch `progress` / `queue_position`, field-by-field validation errors).
//!
//! Needs Debian's `chromium` and `chromium-driver` (HEADSHOT_CHROMIUM / HEADSHOT_CHROMEDRIVER
//! name other binaries) and a python with `selenium` (HEADSHOT_E2E_PYTHON; tools/test.sh
//! installs it). Without them the test is skipped loudly, unless HEADSHOT_E2E_REQUIRED=1 (CI).

mod real_binary;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use real_binary::*;

const KEY: &str = "playground-key";

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

fn tool(env: &str, names: &[&str]) -> Result<PathBuf, String> {
    match std::env::var_os(env) {
        Some(path) => Ok(PathBuf::from(path)),
        None => on_path(names).ok_or_else(|| {
            format!("none of {names:?} is on PATH (Debian: apt-get install chromium chromium-driver; or set {env})")
        }),
    }
}

fn python_with_selenium() -> Result<String, String> {
    let python = std::env::var("HEADSHOT_E2E_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import selenium"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python.clone()).ok_or_else(|| {
        format!("{python} cannot `import selenium`; run tools/test.sh or pip install selenium")
    })
}

/// chromium, chromedriver and a python with selenium, or why a test cannot run.
struct Browser {
    chromium: PathBuf,
    chromedriver: PathBuf,
    python: String,
}

/// The browser tools; `None` after a loud skip (a failure under HEADSHOT_E2E_REQUIRED=1).
fn browser(test: &str) -> Option<Browser> {
    let found = tool("HEADSHOT_CHROMIUM", &["chromium", "chromium-browser"]).and_then(|chromium| {
        Ok(Browser {
            chromium,
            chromedriver: tool("HEADSHOT_CHROMEDRIVER", &["chromedriver"])?,
            python: python_with_selenium()?,
        })
    });
    match found {
        Ok(browser) => Some(browser),
        Err(why) => {
            skip_or_fail(test, &why);
            None
        }
    }
}

#[test]
fn a_job_submitted_from_the_page_shows_its_images() {
    let Some(browser) = browser("a_job_submitted_from_the_page_shows_its_images") else {
        return;
    };
    let assets = test_assets();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // No synchronous wait: the submit answers `processing`, so the page must poll fetch_result.
    let mut command = tiny_server_command(port, KEY, data.path());
    command.args(["--sync-wait-secs", "0"]);
    let mut server = Running::spawn(command, assets);
    server.wait_healthy(&base);

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("playground.png");
    let status = Command::new(&browser.python)
        .arg(repo_root().join("tests/e2e/playground_browser.py"))
        .args([&base, KEY])
        .arg(assets.join("yaoming.jpg"))
        .args([&screenshot, &browser.chromium, &browser.chromedriver])
        .status()
        .expect("running the browser driver");
    assert!(
        status.success(),
        "tests/e2e/playground_browser.py failed (see its output above)"
    );
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 0),
        "no screenshot at {}",
        screenshot.display()
    );
}

#[test]
fn the_page_shows_progress_queue_position_and_field_errors() {
    let Some(browser) = browser("the_page_shows_progress_queue_position_and_field_errors") else {
        return;
    };
    let status = Command::new(&browser.python)
        .arg(repo_root().join("tests/e2e/playground_progress.py"))
        .arg(repo_root().join("crates/headshot-server/src/routes/playground.html"))
        .arg(test_assets().join("yaoming.jpg"))
        .args([&browser.chromium, &browser.chromedriver])
        .status()
        .expect("running the browser driver");
    assert!(
        status.success(),
        "tests/e2e/playground_progress.py failed (see its output above)"
    );
}
