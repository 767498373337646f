//! The S3 output store against a real S3 server (moto, started per test): what the local-disk
//! store guarantees, across the network: round trips, unguessable names, expiry, deletion,
//! presigned URLs, and a clear, quick error when the server is gone.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use headshot_store::{OutputFormat, OutputName, OutputStore, S3Config, S3OutputStore, StoreError};
use headshot_test_support::services::{S3Service, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY};

fn config(s3: &S3Service, key_prefix: &str) -> S3Config {
    S3Config {
        bucket: s3.bucket.clone(),
        key_prefix: key_prefix.to_string(),
        endpoint: Some(s3.endpoint()),
        region: "us-east-1".into(),
        access_key_id: S3_ACCESS_KEY_ID.into(),
        secret_access_key: S3_SECRET_ACCESS_KEY.into(),
        request_timeout: Duration::from_secs(5),
        max_retries: 1,
    }
}

fn name(prefix: &str, index: usize, format: OutputFormat) -> OutputName {
    OutputName::new(prefix, index, format).unwrap()
}

/// A plain HTTP GET of `url` (a presigned URL on loopback): status line and body.
fn http_get(url: &str) -> (String, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let status = head.lines().next().unwrap_or_default().to_string();
    let body = answer[split + 4..].to_vec();
    // moto answers with Content-Length; chunked bodies do not occur for small objects.
    (status, body)
}

#[test]
fn outputs_round_trip_are_listed_per_job_and_deleted() {
    let Some(s3) = S3Service::start("outputs") else {
        return;
    };
    let store = S3OutputStore::open(&config(&s3, "head/shots"), Duration::from_secs(3600)).unwrap();
    let prefix = store.new_prefix();
    assert_eq!(prefix.len(), 36, "a UUID v4: {prefix}");
    assert_ne!(prefix, store.new_prefix());

    let png = name(&prefix, 0, OutputFormat::Png);
    let text = name(&prefix, 1, OutputFormat::Base64);
    store.put(&png, b"\x89PNG fake").unwrap();
    store.put(&text, b"data:image/png;base64,AAAA").unwrap();
    assert_eq!(
        store.read(&png).unwrap().as_deref(),
        Some(&b"\x89PNG fake"[..])
    );
    assert_eq!(
        store.read(&text).unwrap().as_deref(),
        Some(&b"data:image/png;base64,AAAA"[..])
    );
    // Replacing keeps one object.
    store.put(&png, b"\x89PNG second").unwrap();
    assert_eq!(
        store.read(&png).unwrap().as_deref(),
        Some(&b"\x89PNG second"[..])
    );

    let other = store.new_prefix();
    store
        .put(&name(&other, 0, OutputFormat::Png), b"other job")
        .unwrap();
    assert_eq!(
        store.read(&name(&prefix, 2, OutputFormat::Png)).unwrap(),
        None
    );

    assert_eq!(store.delete_prefix(&prefix).unwrap(), 2);
    assert_eq!(store.read(&png).unwrap(), None);
    assert_eq!(
        store
            .read(&name(&other, 0, OutputFormat::Png))
            .unwrap()
            .as_deref(),
        Some(&b"other job"[..]),
        "deleting one job's files leaves the others"
    );
    assert_eq!(store.delete_prefix(&prefix).unwrap(), 0);

    // A second store on the same bucket with another key prefix sees nothing of the first.
    let elsewhere =
        S3OutputStore::open(&config(&s3, "elsewhere"), Duration::from_secs(3600)).unwrap();
    assert_eq!(
        elsewhere.read(&name(&other, 0, OutputFormat::Png)).unwrap(),
        None
    );
}

#[test]
fn expired_outputs_are_not_served_and_the_sweep_deletes_them() {
    let Some(s3) = S3Service::start("expiry") else {
        return;
    };
    let ttl = Duration::from_secs(3600);
    let store = S3OutputStore::open(&config(&s3, ""), ttl).unwrap();
    let prefix = store.new_prefix();
    let file = name(&prefix, 0, OutputFormat::Png);
    store.put(&file, &[7u8; 1000]).unwrap();

    // Nothing is old enough yet.
    let report = store.sweep_expired(SystemTime::now()).unwrap();
    assert_eq!(report.files_removed, 0);
    assert!(store.read(&file).unwrap().is_some());

    // As seen a TTL later, the file has expired.
    let later = SystemTime::now() + ttl + Duration::from_secs(5);
    let report = store.sweep_expired(later).unwrap();
    assert_eq!((report.files_removed, report.bytes_removed), (1, 1000));
    assert_eq!(store.read(&file).unwrap(), None);

    // A store whose TTL is already over does not serve what it finds.
    let short = S3OutputStore::open(&config(&s3, ""), Duration::ZERO).unwrap();
    let file = name(&prefix, 1, OutputFormat::Png);
    short.put(&file, b"gone at once").unwrap();
    assert_eq!(short.read(&file).unwrap(), None);
}

#[test]
fn presigned_urls_fetch_the_object_without_credentials() {
    let Some(s3) = S3Service::start("signed") else {
        return;
    };
    let store = S3OutputStore::open(&config(&s3, "out"), Duration::from_secs(3600)).unwrap();
    let file = name(&store.new_prefix(), 0, OutputFormat::Png);
    store.put(&file, b"\x89PNG signed").unwrap();
    let url = store
        .presigned_url(&file, Duration::from_secs(600))
        .unwrap()
        .expect("S3 signs URLs");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(url.contains(&file.to_string()), "{url}");
    let (status, body) = http_get(&url);
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, b"\x89PNG signed");
}

#[test]
fn a_wrong_bucket_fails_at_open_and_a_stopped_server_fails_quickly() {
    let Some(mut s3) = S3Service::start("present") else {
        return;
    };
    let mut wrong = config(&s3, "");
    wrong.bucket = "absent".into();
    let err = S3OutputStore::open(&wrong, Duration::from_secs(60)).unwrap_err();
    assert!(err.to_string().contains("\"absent\""), "{err}");

    let store = S3OutputStore::open(&config(&s3, ""), Duration::from_secs(60)).unwrap();
    s3.stop();
    let started = Instant::now();
    let err = store
        .put(&name(&store.new_prefix(), 0, OutputFormat::Png), b"x")
        .unwrap_err();
    assert!(matches!(err, StoreError::Remote { .. }), "{err:?}");
    assert!(err.to_string().contains("could not store"), "{err}");
    eprintln!(
        "a put to a stopped S3 server failed after {:?}: {err}",
        started.elapsed()
    );
}
