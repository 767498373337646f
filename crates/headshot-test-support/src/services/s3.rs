//! moto's S3 server (`moto_server`, from PyPI; tools/test.sh installs it in .cache/test-venv).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::missing;
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
        // Port 0: moto binds a port of its own and says which, so two tests starting at once
        // can never be handed the same free port.
        let (child, port) = spawn(0);
        let mut service = S3Service {
            child,
            port,
            bucket: bucket.to_string(),
        };
        service.create_bucket();
        Some(service)
    }

    /// Starts the server again on the same port, with the bucket again (moto keeps nothing).
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port).0;
        self.create_bucket();
    }

    /// `http://127.0.0.1:{port}`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// moto takes an unsigned `PUT /{bucket}`; plain HTTP keeps the helper free of a client.
    /// A connection moto drops while it is still starting (a reset, seen under CI's load) is
    /// tried again; an HTTP answer other than 200 is a failure at once.
    fn create_bucket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.put_bucket() {
                Ok(answer) => {
                    assert!(
                        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
                        "creating the bucket failed: {answer}"
                    );
                    return;
                }
                Err(e) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("moto_server exited ({status}) before the bucket was made: {e}");
                    }
                    if Instant::now() >= deadline {
                        panic!("moto_server on {} never took the bucket: {e}", self.port);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn put_bucket(&self) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let request = format!(
            "PUT /{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.bucket, self.port
        );
        stream.write_all(request.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
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

/// moto on `port` (0: one it picks) and the port it listens on, once it says so. Its log
/// is read to the end on a thread of its own, so the pipe never fills and stalls it.
fn spawn(port: u16) -> (Child, u16) {
    let program = program();
    let mut child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", program.display()));
    let log = child.stderr.take().expect("moto's stderr is piped");
    let (listening, port_said) = mpsc::channel();
    std::thread::spawn(move || {
        let mut listening = Some(listening);
        for line in BufReader::new(log).lines() {
            let Ok(line) = line else { break };
            if let Some(port) = listening_port(&line) {
                if let Some(listening) = listening.take() {
                    let _ = listening.send(port);
                }
            }
        }
    });
    match port_said.recv_timeout(Duration::from_secs(30)) {
        Ok(port) => (child, port),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            panic!("moto_server did not say it listens within 30 s (exit: {status})");
        }
    }
}

/// werkzeug's start-up line, ` * Running on http://127.0.0.1:PORT`, written once it listens.
fn listening_port(line: &str) -> Option<u16> {
    let (_, after) = line.split_once("Running on http://127.0.0.1:")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Drop for S3Service {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn the_port_is_read_from_werkzeugs_start_up_line() {
        assert_eq!(
            listening_port(" * Running on http://127.0.0.1:34731"),
            Some(34731)
        );
        assert_eq!(listening_port("Press CTRL+C to quit"), None);
        assert_eq!(
            listening_port("127.0.0.1 - - \"PUT /b HTTP/1.1\" 200 -"),
            None
        );
    }
}
