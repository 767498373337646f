//! moto's S3 server (`moto_server`, from PyPI; tools/test.sh installs it in .cache/test-venv).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, missing, wait_for_port};
use crate::workspace;

/// Credentials moto accepts (it checks the signature's shape, not the secret).
pub const S3_ACCESS_KEY_ID: &str = "headshot-test";
pub const S3_SECRET_ACCESS_KEY: &str = "headshot-test-secret";

/// One S3 server with one empty bucket.
pub struct S3Service {
    child: Child,
    pub port: u16,
    pub bucket: String,
}

impl S3Service {
    /// Starts moto on a free port and creates `bucket`; `None` (after a loud skip) when moto is
    /// not installed and CI does not require it.
    pub fn start(bucket: &str) -> Option<S3Service> {
        let program = program();
        if !program.exists() {
            missing(
                "moto_server",
                &format!("is not at {} (run tools/test.sh once)", program.display()),
            )?;
        }
        let port = free_port();
        let service = S3Service {
            child: spawn(port),
            port,
            bucket: bucket.to_string(),
        };
        service.create_bucket();
        Some(service)
    }

    /// Starts the server again on the same port, with the bucket again (moto keeps nothing).
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port);
        self.create_bucket();
    }

    /// `http://127.0.0.1:{port}`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// moto takes an unsigned `PUT /{bucket}`; plain HTTP keeps the helper free of a client.
    fn create_bucket(&self) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("moto answers");
        let request = format!(
            "PUT /{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.bucket, self.port
        );
        stream.write_all(request.as_bytes()).expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "creating the bucket failed: {answer}"
        );
    }

    /// Stops the server (for outage tests).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn program() -> PathBuf {
    std::env::var_os("HEADSHOT_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/test-venv/bin/moto_server"))
}

/// moto on `port`, once it listens.
fn spawn(port: u16) -> Child {
    let program = program();
    let mut child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", program.display()));
    if !wait_for_port(port, Duration::from_secs(30)) {
        let _ = child.kill();
        panic!("moto_server did not listen on {port} within 30 s");
    }
    child
}

impl Drop for S3Service {
    fn drop(&mut self) {
        self.stop();
    }
}
