//! `--json-logs`: the real binary writes one JSON object per log line, with the request's span
//! (and so its request id) on the lines logged while serving it.

mod real_binary;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use real_binary::*;
use serde_json::Value;

#[test]
fn json_logs_are_one_object_per_line_with_the_request_id() {
    let assets = test_assets();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = tiny_server_command(port, "json-key", data.path());
    command
        .arg("--json-logs")
        .env("RUST_LOG", "info,headshot_server=debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    let mut server = Running::spawn(command, assets);
    let stderr = server.0.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = std::thread::spawn({
        let lines = lines.clone();
        move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    server.wait_healthy(&base);

    // A submit with a wrong key in the header: refused at once, logged at debug in its span.
    {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "POST /api/v6/image_editing/head_shot HTTP/1.1\r\nHost: x\r\nkey: wrong\r\n\
             x-request-id: json-req-9\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("Invalid Api Key"), "{answer}");
    }
    // Give the log line a moment to be written, then stop the server (closing stderr).
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(server);
    reader.join().unwrap();

    let lines = lines.lock().unwrap();
    assert!(!lines.is_empty(), "the server logged nothing");
    let objects: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(objects
        .iter()
        .all(|o| o["level"].is_string() && o["fields"].is_object()));
    assert!(
        objects
            .iter()
            .any(|o| o["fields"]["message"] == "headshot-server listening"),
        "{lines:?}"
    );
    let in_request = objects
        .iter()
        .find(|o| o["span"]["request_id"] == "json-req-9")
        .unwrap_or_else(|| panic!("no line in the request's span: {lines:?}"));
    assert_eq!(
        in_request["span"]["path"],
        "/api/v6/image_editing/head_shot"
    );
}
