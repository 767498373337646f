//! Connections to one Redis server, shared by the job store and the job queue. Sync
//! connections (the store traits are synchronous), each with connect, read and write timeouts,
//! so a server that is down or unreachable answers with an error in about `timeout`, never a
//! hang. Healthy connections are kept for reuse; one that saw an I/O error is dropped.

use std::sync::Mutex;
use std::time::Duration;

use headshot_core::store::StoreError;
use redis::{Client, Connection, RedisError, RedisResult};

/// Where the Redis server is, and the names this deployment uses in it.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/[db]` (or `rediss://` for TLS).
    pub url: String,
    /// Every key starts with `{namespace}:` (a hash tag, so one deployment's keys share a
    /// cluster slot and scripts may touch them together); deployments sharing a server differ
    /// here.
    pub namespace: String,
    /// For connecting and for each command (a blocking read adds its own wait to it).
    pub timeout: Duration,
}

impl RedisConfig {
    /// `url` with the default namespace (`headshot`) and a 2-second timeout.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            namespace: "headshot".into(),
            timeout: Duration::from_secs(2),
        }
    }

    /// The key `name` in this deployment's namespace.
    pub(crate) fn key(&self, name: impl std::fmt::Display) -> String {
        format!("{{{}}}:{name}", self.namespace)
    }
}

/// Most connections kept idle; more may be open while many threads wait on Redis.
const MAX_IDLE: usize = 16;

pub(crate) struct RedisPool {
    client: Client,
    idle: Mutex<Vec<Connection>>,
    timeout: Duration,
    /// The URL without its password, for error messages.
    shown_url: String,
}

/// The URL as logs may show it: any `user:password@` replaced.
fn without_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***@{}", &url[..scheme_end + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// The connection can no longer be trusted: the server went away, or a reply may still be
/// on its way after a timeout.
fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

impl RedisPool {
    pub(crate) fn open(config: &RedisConfig) -> Result<Self, StoreError> {
        let shown_url = without_credentials(&config.url);
        let client = Client::open(config.url.as_str()).map_err(|e| {
            StoreError::Config(format!("the Redis URL {shown_url:?} is not usable: {e}"))
        })?;
        Ok(RedisPool {
            client,
            idle: Mutex::new(Vec::new()),
            timeout: config.timeout,
            shown_url,
        })
    }

    fn remote(&self, what: &str, source: RedisError) -> StoreError {
        StoreError::Remote {
            what: format!("{what} (Redis at {})", self.shown_url),
            source: Box::new(source),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The vector is only pushed to and popped from: a poisoned lock holds no half-change.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connect(&self) -> RedisResult<Connection> {
        let connection = self.client.get_connection_with_timeout(self.timeout)?;
        connection.set_read_timeout(Some(self.timeout))?;
        connection.set_write_timeout(Some(self.timeout))?;
        Ok(connection)
    }

    /// Runs `op` on a connection; `what` says what failed ("could not read job 7").
    pub(crate) fn run<T>(
        &self,
        what: &str,
        op: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.run_waiting(what, Duration::ZERO, op)
    }

    /// Like [`RedisPool::run`] for a command that may block on the server up to `wait`
    /// (`XREADGROUP BLOCK`): its read timeout is `wait` longer.
    pub(crate) fn run_waiting<T>(
        &self,
        what: &str,
        wait: Duration,
        mut op: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle().pop();
        let reused = pooled.is_some();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => self.connect().map_err(|e| self.remote(what, e))?,
        };
        let mut outcome = self.attempt(&mut connection, wait, &mut op);
        // A kept connection may have died with a restarted server while it sat idle: the
        // others did too, so they go, and the command is sent once more on a fresh one.
        // Everything sent here may run twice (writes are idempotent or, for ids, merely skip
        // one); the queue's consumers tolerate a second delivery anyway.
        if reused && outcome.as_ref().is_err_and(breaks_connection) {
            self.idle().clear();
            connection = self.connect().map_err(|e| self.remote(what, e))?;
            outcome = self.attempt(&mut connection, wait, &mut op);
        }
        match outcome {
            Ok(value) => {
                self.keep(connection);
                Ok(value)
            }
            Err(e) => {
                if !breaks_connection(&e) {
                    self.keep(connection);
                }
                Err(self.remote(what, e))
            }
        }
    }

    fn attempt<T>(
        &self,
        connection: &mut Connection,
        wait: Duration,
        op: &mut impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        if wait.is_zero() {
            return op(connection);
        }
        connection.set_read_timeout(Some(self.timeout + wait))?;
        let outcome = op(connection);
        // Failing here means the connection broke, which `outcome` reports already.
        let _ = connection.set_read_timeout(Some(self.timeout));
        outcome
    }

    fn keep(&self, connection: Connection) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_error_messages() {
        assert_eq!(
            without_credentials("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(
            without_credentials("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let config = RedisConfig::new("redis://127.0.0.1/");
        assert_eq!(config.key("job:7"), "{headshot}:job:7");
    }
}
