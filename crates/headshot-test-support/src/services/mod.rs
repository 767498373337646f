//! Real services for the distributed tests, each started on a free loopback port for one test
//! and killed when dropped. They are the programs users run (no mocks); where one is missing,
//! a test fails under CI (`HEADSHOT_E2E_REQUIRED=1`) and skips loudly elsewhere.

mod redis;
mod s3;

pub use redis::RedisServer;
pub use s3::{S3Service, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY};

use std::net::TcpListener;

/// Whether CI demands tests that need an outside program (HEADSHOT_E2E_REQUIRED=1): then a
/// missing one is a failure, elsewhere a loud skip.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("HEADSHOT_E2E_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{test} is required but: {why}");
    }
    eprintln!("\n\n!!!!!!!!!! SKIPPED {test}: {why} !!!!!!!!!!\n\n");
}

/// `None` after a loud skip; panics when CI requires the service.
pub(crate) fn missing(service: &str, why: &str) -> Option<std::convert::Infallible> {
    skip_or_fail(&format!("a test using {service}"), why);
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
