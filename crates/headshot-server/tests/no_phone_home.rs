//! The server contacts nothing but what a request names. The real binary runs a real job (tiny
//! model set, ONNX Runtime face analysis, safety checker, webhook) inside a network namespace
//! with only loopback (`unshare --net`, needs root: CI runs as root). A private mount namespace
//! gives it an /etc/resolv.conf pointing at a recording DNS server on loopback, and strace logs
//! every connect()/sendto(): every name looked up and every address contacted must be the face
//! image host, the webhook host, or that DNS server.

mod real_binary;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use real_binary::*;
use serde_json::Value;

const KEY: &str = "netns-key";
const TEST: &str = "contacts_only_what_the_request_names";
const INNER: &str = "HEADSHOT_NETNS_INNER";
/// The recording DNS server's address inside the namespace.
const DNS: &str = "127.0.0.77";
const FACE_HOST: &str = "faces.example";
const HOOK_HOST: &str = "hooks.example";

#[test]
fn contacts_only_what_the_request_names() {
    if std::env::var_os(INNER).is_some() {
        return inside_the_namespace();
    }
    for (tool, args) in [
        ("unshare", &["--net", "--mount", "true"][..]),
        ("strace", &["-V"][..]),
        ("ip", &["-V"][..]),
    ] {
        let ok = Command::new(tool)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return skip_or_fail(
                TEST,
                &format!("`{tool}` is missing or not permitted (needs root, strace and iproute2; .ci/run installs them)"),
            );
        }
    }
    let resolv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        resolv.path(),
        format!("nameserver {DNS}\noptions timeout:1 attempts:1\n"),
    )
    .unwrap();
    // This same test, again, inside new network and mount namespaces.
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--", "sh", "-c"])
        .arg(r#"ip link set lo up && mount --bind "$1" /etc/resolv.conf && shift && exec "$@""#)
        .arg("sh")
        .arg(resolv.path())
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .status()
        .expect("running unshare");
    assert!(
        status.success(),
        "the test inside the network namespace failed (see above)"
    );
}

fn inside_the_namespace() {
    let names = Arc::new(Mutex::new(Vec::<String>::new()));
    let dns = UdpSocket::bind((DNS, 53)).expect("binding the recording DNS server");
    {
        let names = names.clone();
        std::thread::spawn(move || answer_dns(dns, names));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let root = repo_root();
    let assets = test_assets();
    let (hosts, webhooks) = runtime.block_on(start_hosts(assets.join("yaoming.jpg")));

    let data = tempfile::tempdir().unwrap();
    let trace = data.path().join("strace.txt");
    let pid_file = data.path().join("server.pid");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // `sh` writes its pid and execs the server, so the server can be stopped by pid (killing
    // strace would detach it instead).
    let mut command = Command::new("strace");
    command
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=connect,sendto,sendmsg,sendmmsg",
            "-o",
        ])
        .arg(&trace)
        .args(["sh", "-c", r#"echo $$ > "$0" && exec "$@""#])
        .arg(&pid_file)
        .arg(server_binary())
        .args(tiny_server_args(
            &root,
            &assets,
            port,
            KEY,
            &data.path().join("data"),
        ))
        .args(["--allow-private-urls", "--sync-wait-secs", "300"]);
    let mut server = Running::spawn(command, &assets);
    server.wait_healthy(&base);

    let face = format!("http://{FACE_HOST}:{}/face.jpg", hosts.port());
    let webhook = format!("http://{HOOK_HOST}:{}/webhook", hosts.port());
    runtime.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        for round in 0..2 {
            let mut job = small_job(KEY, &face);
            job["webhook"] = Value::from(webhook.as_str());
            job["track_id"] = Value::from(round);
            let answer: Value = client
                .post(format!("{base}/api/v6/image_editing/head_shot"))
                .json(&job)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(answer["status"], "success", "{answer}");
            let output = answer["output"][0].as_str().unwrap();
            let png = client.get(output).send().await.unwrap();
            assert_eq!(png.status(), 200);
            let delivered = tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    if webhooks.lock().unwrap().len() > round {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            assert!(
                delivered.is_ok(),
                "the webhook of job {round} never arrived"
            );
        }
    });

    // ONNX Runtime's telemetry was seen looking up its collector 2-5 s after sessions ran;
    // keep watching a while before stopping the server.
    std::thread::sleep(Duration::from_secs(20));
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stopped = Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let exit = server.0.wait().unwrap();
    assert!(exit.success(), "strace/headshot-server exited with {exit}");

    let looked_up: BTreeSet<String> = names.lock().unwrap().iter().cloned().collect();
    let allowed_names: BTreeSet<String> = [FACE_HOST, HOOK_HOST].map(String::from).into();
    let unexpected_names: Vec<&String> = looked_up.difference(&allowed_names).collect();
    assert!(
        unexpected_names.is_empty(),
        "the server looked up names no request named: {unexpected_names:?}"
    );
    assert!(
        looked_up.contains(FACE_HOST),
        "the face host was never resolved: {looked_up:?}"
    );

    let allowed_peers = [format!("{DNS}:53"), format!("127.0.0.1:{}", hosts.port())];
    let peers = contacted_peers(&trace);
    let unexpected_peers: Vec<&String> = peers
        .iter()
        .filter(|p| !allowed_peers.contains(p))
        .collect();
    assert!(
        unexpected_peers.is_empty(),
        "the server contacted addresses no request named: {unexpected_peers:?} (all: {peers:?})"
    );
    assert!(
        peers.contains(&allowed_peers[1]),
        "no connection to the face host was traced: {peers:?}"
    );
}

/// The face image and webhook host: `/face.jpg` serves `photo`; webhook bodies are collected.
async fn start_hosts(photo: std::path::PathBuf) -> (std::net::SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    let bytes = std::fs::read(photo).unwrap();
    let router = Router::new()
        .route("/face.jpg", get(move || async move { bytes.clone() }))
        .route(
            "/webhook",
            post(move |body: axum::Json<Value>| async move {
                sink.lock().unwrap().push(body.0);
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, received)
}

/// Answers A queries for the named hosts with 127.0.0.1, everything else with NXDOMAIN (AAAA
/// for the named hosts: no records), recording every name asked for.
fn answer_dns(socket: UdpSocket, names: Arc<Mutex<Vec<String>>>) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            return;
        };
        let Some((name, qtype, question_end)) = parse_question(&buf[..len]) else {
            continue;
        };
        names.lock().unwrap().push(name.clone());
        let known = name == FACE_HOST || name == HOOK_HOST;
        let mut reply = buf[..question_end].to_vec();
        reply[2] = 0x84 | (buf[2] & 0x01); // response, authoritative, keep RD
        reply[3] = if known { 0x80 } else { 0x83 }; // RA; NOERROR or NXDOMAIN
        reply[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
        if known && qtype == 1 {
            reply[7] = 1;
            reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
        }
        let _ = socket.send_to(&reply, from);
    }
}

/// The first question of a DNS query: (name, qtype, end offset of the question).
fn parse_question(packet: &[u8]) -> Option<(String, u16, usize)> {
    if packet.len() < 12 || packet[4..6] != [0, 1] {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *packet.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(packet.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

/// `ip:port` of every IPv4/IPv6 address in the traced connect()/send*() calls.
fn contacted_peers(trace: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(trace).unwrap();
    let field = |line: &str, start: &str, end: char| -> Option<String> {
        let from = line.find(start)? + start.len();
        Some(line[from..].split(end).next()?.to_string())
    };
    text.lines()
        .filter_map(|line| {
            let port = field(line, "sin_port=htons(", ')')
                .or_else(|| field(line, "sin6_port=htons(", ')'))?;
            let ip = field(line, "inet_addr(\"", '"')
                .or_else(|| field(line, "inet_pton(AF_INET6, \"", '"'))?;
            Some(format!("{ip}:{port}"))
        })
        .collect()
}
