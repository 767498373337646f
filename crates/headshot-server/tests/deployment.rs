//! The shipped container files (Dockerfile.cuda, compose.yaml) against the real binary: every
//! `HEADSHOT_*` setting they give is one the server reads, and the image's health check, run as
//! Docker runs it, passes against a serving server and fails where none listens. (The images
//! themselves cannot be built here; tools/lint-container.sh lints the files.)

mod real_binary;

use std::process::Command;

use real_binary::*;

const KEY: &str = "deployment-key";

fn read(file: &str) -> String {
    std::fs::read_to_string(repo_root().join(file)).unwrap()
}

/// `HEADSHOT_*` names set in `ENV` lines (Dockerfile) or as `environment:` keys (compose).
fn settings(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.split_whitespace())
        .map(|word| word.trim_start_matches("ENV"))
        .filter_map(|word| {
            let name = word.split(['=', ':']).next()?;
            let is_setting = name.starts_with("HEADSHOT_") && word.len() > name.len();
            is_setting.then(|| name.to_string())
        })
        .collect()
}

#[test]
fn every_setting_of_the_container_files_is_a_server_flag() {
    let help = Command::new(server_binary())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for file in ["Dockerfile.cuda", "compose.yaml"] {
        let names = settings(&read(file));
        assert!(names.len() >= 4, "{file}: found only {names:?}");
        for name in names {
            assert!(
                help.contains(&format!("[env: {name}")),
                "{file} sets {name}, which headshot-server does not read"
            );
        }
    }
}

/// The `HEALTHCHECK ... CMD [..]` exec form of Dockerfile.cuda.
fn image_health_check() -> Vec<String> {
    let dockerfile = read("Dockerfile.cuda");
    let start = dockerfile.find("\nHEALTHCHECK ").expect("a HEALTHCHECK");
    let rest = &dockerfile[start..];
    let json = &rest[rest.find("CMD [").unwrap() + 4..];
    let json = &json[..=json.find("]\n").unwrap()];
    serde_json::from_str(json).unwrap()
}

fn health_check_passes(bind: &str) -> bool {
    let check = image_health_check();
    Command::new(&check[0])
        .args(&check[1..])
        .env("HEADSHOT_BIND", bind)
        .status()
        .unwrap()
        .success()
}

#[test]
fn the_image_health_check_asks_the_readiness_route() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Running::spawn(tiny_server_command(port, KEY, data.path()), test_assets());
    server.wait_healthy(&base);
    // The image binds 0.0.0.0:PORT; the check takes the port from HEADSHOT_BIND.
    assert!(health_check_passes(&format!("0.0.0.0:{port}")));
    drop(server);
    assert!(!health_check_passes(&format!("0.0.0.0:{port}")));
}
