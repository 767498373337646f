//! A real `redis-server` (the Debian package; `HEADSHOT_REDIS_SERVER` names another binary),
//! configured entirely on its command line so no `/etc/redis/redis.conf` leaks in: loopback
//! only, its own temporary folder, and either no persistence at all or an append-only file
//! written on every command (so a `kill -9` loses nothing, as a crash test needs).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, missing};

/// One redis-server for one test, killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Its working folder (the append-only file lives here); removed on drop.
    dir: tempfile::TempDir,
    persistent: bool,
}

impl RedisServer {
    /// A server that keeps nothing on disk (a restart starts empty); `None` after a loud skip
    /// when redis-server is not installed and CI does not require it.
    pub fn start() -> Option<RedisServer> {
        Self::launch(false)
    }

    /// A server that writes every command to its append-only file before answering, so
    /// [`RedisServer::restart`] (or a kill) keeps all data.
    pub fn start_persistent() -> Option<RedisServer> {
        Self::launch(true)
    }

    fn launch(persistent: bool) -> Option<RedisServer> {
        let program = program();
        if let Err(e) = Command::new(&program).arg("--version").output() {
            missing(
                "redis-server",
                &format!(
                    "{} cannot run ({e}); install the Debian package redis-server",
                    program.display()
                ),
            )?;
        }
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary folder for redis-server"),
            persistent,
        };
        // Two tests starting at once may be handed the same free port: the second server then
        // cannot listen, and the other's answers its ping. Ours is the one whose pid answers.
        for _ in 0..5 {
            if server.spawn() {
                return Some(server);
            }
            server.port = free_port();
        }
        panic!("redis-server found its port taken by another server five times over");
    }

    /// `redis://127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL, as a crash would), for outage tests.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port (and, when persistent, with the
    /// same data).
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "port {} was taken by another server while this one was down",
            self.port
        );
    }

    /// Starts the server on `self.port`; `false` when another server answers there instead.
    fn spawn(&mut self) -> bool {
        let program = program();
        let port = self.port.to_string();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            "--save",
            "",
            "--logfile",
            "",
            "--databases",
            "1",
        ];
        if self.persistent {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            args.extend(["--appendonly", "no"]);
        }
        let mut child = Command::new(&program)
            .args(&args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", program.display()));
        if !answers_ping(self.port, Duration::from_secs(20)) {
            let _ = child.kill();
            panic!(
                "redis-server did not answer PING on {} within 20 s",
                self.port
            );
        }
        if serving_pid(self.port) != Some(child.id()) {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        self.child = Some(child);
        true
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn program() -> PathBuf {
    std::env::var_os("HEADSHOT_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// Waits for `+PONG`: a listening server may still answer `-LOADING` while it reads its
/// append-only file. An inline command keeps the helper free of a client.
fn answers_ping(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut answer = [0u8; 7];
            if stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut answer).is_ok()
                && &answer == b"+PONG\r\n"
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The pid of the server answering on `port`, from `INFO server` (a bulk string holding a
/// `process_id:` line).
fn serving_pid(port: u16) -> Option<u32> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut header = Vec::new();
    let mut byte = [0u8; 1];
    while !header.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).ok()?;
        header.push(byte[0]);
    }
    let len: usize = std::str::from_utf8(header.strip_prefix(b"$")?)
        .ok()?
        .trim_end()
        .parse()
        .ok()?;
    let mut info = vec![0u8; len];
    stream.read_exact(&mut info).ok()?;
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One inline command and its reply (simple replies and short bulk strings only).
    fn command(port: u16, line: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("redis answers");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        // A bulk string ("$3\r\nyes\r\n") takes two lines; other replies one (of an array,
        // only its header line is read).
        let complete = |reply: &[u8]| {
            let lines = reply.windows(2).filter(|w| w == b"\r\n").count();
            let bulk = reply.first() == Some(&b'$') && !reply.starts_with(b"$-1");
            lines >= if bulk { 2 } else { 1 }
        };
        while !complete(&reply) && stream.read_exact(&mut byte).is_ok() {
            reply.push(byte[0]);
        }
        String::from_utf8_lossy(&reply).into_owned()
    }

    #[test]
    fn a_persistent_server_keeps_its_data_across_a_kill_and_restart() {
        let Some(mut redis) = RedisServer::start_persistent() else {
            return;
        };
        assert_eq!(command(redis.port, "SET kept yes"), "+OK\r\n");
        let port = redis.port;
        redis.restart();
        assert_eq!(redis.port, port);
        assert_eq!(command(redis.port, "GET kept"), "$3\r\nyes\r\n");
        redis.stop();
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "stopped means gone"
        );
    }

    #[test]
    fn a_plain_server_starts_empty_after_a_restart_and_reads_no_config_file() {
        let Some(mut redis) = RedisServer::start() else {
            return;
        };
        assert_eq!(command(redis.port, "SET lost yes"), "+OK\r\n");
        redis.restart();
        assert_eq!(command(redis.port, "GET lost"), "$-1\r\n");
        // No system config: the server saves nothing and has no password.
        assert!(command(redis.port, "CONFIG GET save").starts_with('*'));
        assert_eq!(command(redis.port, "DBSIZE"), ":0\r\n");
        assert!(redis.url().starts_with("redis://127.0.0.1:"));
    }

    #[test]
    fn a_port_another_server_holds_is_noticed_not_shared() {
        let Some(first) = RedisServer::start() else {
            return;
        };
        let mut second = RedisServer {
            child: None,
            port: first.port,
            dir: tempfile::tempdir().unwrap(),
            persistent: false,
        };
        assert!(!second.spawn(), "the first server answered in its place");
        assert!(second.child.is_none());
        assert_eq!(
            serving_pid(first.port),
            first.child.as_ref().map(|c| c.id())
        );
    }
}
