//! Outputs in an S3 bucket (a real moto server per test): served through the API (`proxy`)
//! or as presigned URLs, never on local disk; an unreachable bucket fails the job clearly, and
//! the server stores again once the bucket is back.

mod common;

use std::time::Duration;

use common::{body, download, Internet, TestServer};
use headshot_core::store::{OutputName, OutputStore};
use headshot_server::PublicOutputs;
use headshot_store::{S3Config, S3OutputStore};
use headshot_test_support::services::{S3Service, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY};
use headshot_test_support::ScriptedGenerator;

async fn server_on(s3: &S3Service, public: PublicOutputs) -> TestServer {
    let (bucket, endpoint) = (s3.bucket.clone(), s3.endpoint());
    TestServer::start(ScriptedGenerator::default(), move |config| {
        config.outputs.output_store = Some(format!("s3://{bucket}/headshots"));
        config.outputs.s3_endpoint = Some(endpoint);
        config.outputs.s3_access_key_id = Some(S3_ACCESS_KEY_ID.into());
        config.outputs.s3_secret_access_key = Some(S3_SECRET_ACCESS_KEY.into());
        config.outputs.s3_timeout_secs = 2;
        config.outputs.public_outputs = public;
    })
    .await
}

fn local_outputs(server: &TestServer) -> usize {
    std::fs::read_dir(server.data_dir.join("outputs"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

#[tokio::test]
async fn proxied_outputs_come_from_the_bucket_through_the_api() {
    let Some(s3) = S3Service::start("proxied") else {
        return;
    };
    let internet = Internet::start(0).await;
    let server = server_on(&s3, PublicOutputs::Proxy).await;
    let answer = server.submit(&body(&internet)).await;
    assert_eq!(answer["status"], "success", "{answer}");
    let url = answer["output"][0].as_str().unwrap();
    assert!(url.starts_with(&server.url("/outputs/")), "{url}");
    let (status, png) = download(url).await;
    assert_eq!(status, 200);
    assert!(is_png(&png));
    assert_eq!(
        local_outputs(&server),
        0,
        "nothing is written to local disk"
    );

    // The object really is in the bucket, under the configured key prefix.
    let name: OutputName = url.rsplit('/').next().unwrap().parse().unwrap();
    let bucket = S3OutputStore::open(
        &S3Config {
            bucket: s3.bucket.clone(),
            key_prefix: "headshots".into(),
            endpoint: Some(s3.endpoint()),
            region: "us-east-1".into(),
            access_key_id: S3_ACCESS_KEY_ID.into(),
            secret_access_key: S3_SECRET_ACCESS_KEY.into(),
            request_timeout: Duration::from_secs(5),
            max_retries: 0,
        },
        Duration::from_secs(3600),
    )
    .unwrap();
    assert_eq!(bucket.read(&name).unwrap(), Some(png));
    server.stop().await;
}

#[tokio::test]
async fn presigned_outputs_point_at_the_bucket_and_fetch_gives_them_too() {
    let Some(s3) = S3Service::start("presigned") else {
        return;
    };
    let internet = Internet::start(0).await;
    let server = server_on(&s3, PublicOutputs::Presigned).await;
    let answer = server.submit(&body(&internet)).await;
    assert_eq!(answer["status"], "success", "{answer}");
    let url = answer["output"][0].as_str().unwrap();
    assert!(url.starts_with(&s3.endpoint()), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let (status, png) = download(url).await;
    assert_eq!(status, 200);
    assert!(is_png(&png));

    let id = answer["id"].as_u64().unwrap();
    let fetched = server.fetch(id).await;
    let again = fetched["output"][0].as_str().unwrap();
    assert!(again.contains("X-Amz-Signature="), "{again}");
    assert_eq!(download(again).await, (200, png));
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_bucket_fails_the_job_clearly_and_the_server_recovers() {
    let Some(mut s3) = S3Service::start("outage") else {
        return;
    };
    let internet = Internet::start(0).await;
    let server = server_on(&s3, PublicOutputs::Proxy).await;
    s3.stop();
    let answer = server.submit(&body(&internet)).await;
    assert_eq!(answer["status"], "failed", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("could not be stored"),
        "{answer}"
    );
    s3.restart();
    let mut answer = serde_json::Value::Null;
    for _ in 0..50 {
        answer = server.submit(&body(&internet)).await;
        if answer["status"] == "success" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer["status"], "success", "{answer}");
    let (status, png) = download(answer["output"][0].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert!(is_png(&png));
    server.stop().await;
}
