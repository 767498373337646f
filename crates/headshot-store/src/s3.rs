//! Outputs in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, ...) through the
//! `object_store` crate, so API nodes and GPU workers on different machines serve the same
//! files. Objects are `{key_prefix}/{file_prefix}/{file name}`: one "folder" per job, so a job's
//! files are listed and deleted without scanning the bucket. An object's age is its
//! `Last-Modified`; expired objects are not served and are deleted by the expiry sweep (bucket
//! lifecycle rules only count whole days, and our TTL is 24 hours).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use headshot_core::store::{OutputName, OutputStore, StoreError, SweepReport};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload,
    RetryConfig,
};

use crate::blocking::AsyncBridge;
use crate::local_disk::random_prefix;

/// Where the bucket is and how to reach it. Credentials are always explicit: the store never
/// asks an instance-metadata service or any other place the operator did not name.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket ("" for the bucket's root).
    pub key_prefix: String,
    /// `None`: AWS itself (`https://s3.{region}.amazonaws.com`); otherwise e.g.
    /// `http://127.0.0.1:9000` for MinIO. Plain http is allowed only when named here.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Per request; a bucket that does not answer fails the request instead of hanging it.
    pub request_timeout: Duration,
    /// Retries of a failed request (with backoff) before the error is reported.
    pub max_retries: usize,
}

impl S3Config {
    /// Reads `s3://bucket/optional/prefix`.
    pub fn parse_url(url: &str) -> Result<(String, String), StoreError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            StoreError::Config(format!(
                "the output store URL must start with s3://, got {url:?}"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Config(format!(
                "the output store URL {url:?} names no bucket"
            )));
        }
        Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
    }
}

/// Output files as objects in one bucket, expiring `ttl` after they were written.
pub struct S3OutputStore {
    s3: Arc<AmazonS3>,
    key_prefix: Option<ObjectPath>,
    ttl: Duration,
    bridge: AsyncBridge,
    bucket: String,
}

impl std::fmt::Debug for S3OutputStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3OutputStore")
            .field("bucket", &self.bucket)
            .field("key_prefix", &self.key_prefix)
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn backend(what: &str, e: object_store::Error) -> StoreError {
    StoreError::Remote {
        what: what.to_string(),
        source: Box::new(e),
    }
}

impl S3OutputStore {
    /// Builds the client and checks once that the bucket answers (a list of at most one key),
    /// so a wrong endpoint, bucket or key fails at start-up rather than on the first job.
    pub fn open(config: &S3Config, ttl: Duration) -> Result<Self, StoreError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_retry(RetryConfig {
                max_retries: config.max_retries,
                retry_timeout: config.request_timeout * (config.max_retries as u32 + 1),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(config.request_timeout)
                    .with_connect_timeout(config.request_timeout.min(Duration::from_secs(5))),
            );
        if let Some(endpoint) = &config.endpoint {
            // Path-style requests: MinIO and most self-hosted servers have no per-bucket DNS.
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let s3 = builder
            .build()
            .map_err(|e| backend("could not configure the S3 client", e))?;
        let key_prefix = (!config.key_prefix.is_empty())
            .then(|| ObjectPath::parse(&config.key_prefix))
            .transpose()
            .map_err(|e| {
                StoreError::Config(format!(
                    "the S3 key prefix {:?} is not a valid object path: {e}",
                    config.key_prefix
                ))
            })?;
        let store = S3OutputStore {
            s3: Arc::new(s3),
            key_prefix,
            ttl,
            bridge: AsyncBridge::new("headshot-s3")?,
            bucket: config.bucket.clone(),
        };
        store.check_reachable()?;
        Ok(store)
    }

    fn check_reachable(&self) -> Result<(), StoreError> {
        let s3 = self.s3.clone();
        let root = self.key_prefix.clone();
        let bucket = self.bucket.clone();
        self.bridge.run(async move {
            s3.list(root.as_ref())
                .try_next()
                .await
                .map(|_| ())
                .map_err(|e| backend(&format!("the S3 bucket {bucket:?} cannot be listed"), e))
        })?
    }

    fn job_folder(&self, file_prefix: &str) -> ObjectPath {
        match &self.key_prefix {
            Some(root) => root.clone().join(file_prefix),
            None => ObjectPath::from(file_prefix),
        }
    }

    fn object_of(&self, name: &OutputName) -> ObjectPath {
        self.job_folder(name.prefix()).join(name.to_string())
    }
}

/// Whether an object written at `written` has outlived `ttl` at `now`.
fn is_expired(written: SystemTime, ttl: Duration, now: SystemTime) -> bool {
    written.checked_add(ttl).is_some_and(|expiry| now >= expiry)
}

impl OutputStore for S3OutputStore {
    fn new_prefix(&self) -> String {
        random_prefix()
    }

    /// One PUT: S3 makes an object visible only once it is complete.
    fn put(&self, name: &OutputName, contents: &[u8]) -> Result<(), StoreError> {
        let s3 = self.s3.clone();
        let path = self.object_of(name);
        let payload = PutPayload::from(contents.to_vec());
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, name.format().content_type().into());
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        self.bridge.run(async move {
            s3.put_opts(&path, payload, options)
                .await
                .map(|_| ())
                .map_err(|e| backend(&format!("could not store {path}"), e))
        })?
    }

    fn read(&self, name: &OutputName) -> Result<Option<Vec<u8>>, StoreError> {
        let s3 = self.s3.clone();
        let path = self.object_of(name);
        let got = self.bridge.run(async move {
            match s3.get(&path).await {
                Ok(result) => {
                    let written = SystemTime::from(result.meta.last_modified);
                    let bytes = result.bytes().await;
                    bytes
                        .map(|b| Some((written, b.to_vec())))
                        .map_err(|e| backend(&format!("could not read {path}"), e))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(backend(&format!("could not read {path}"), e)),
            }
        })??;
        Ok(got
            .filter(|(written, _)| !is_expired(*written, self.ttl, SystemTime::now()))
            .map(|(_, bytes)| bytes))
    }

    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let s3 = self.s3.clone();
        let folder = self.job_folder(prefix);
        self.bridge.run(async move {
            let objects: Vec<_> = s3
                .list(Some(&folder))
                .try_collect()
                .await
                .map_err(|e| backend(&format!("could not list {folder}"), e))?;
            let mut removed = 0;
            for object in objects {
                match s3.delete(&object.location).await {
                    Ok(()) => removed += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(backend(&format!("could not delete {}", object.location), e))
                    }
                }
            }
            Ok(removed)
        })?
    }

    fn sweep_expired(&self, now: SystemTime) -> Result<SweepReport, StoreError> {
        let s3 = self.s3.clone();
        let root = self.key_prefix.clone();
        let ttl = self.ttl;
        self.bridge.run(async move {
            let expired: Vec<_> = s3
                .list(root.as_ref())
                .try_filter(|object| {
                    let written = SystemTime::from(object.last_modified);
                    std::future::ready(is_expired(written, ttl, now))
                })
                .try_collect()
                .await
                .map_err(|e| backend("could not list the outputs for the expiry sweep", e))?;
            let mut report = SweepReport::default();
            for object in expired {
                match s3.delete(&object.location).await {
                    Ok(()) => {
                        report.files_removed += 1;
                        report.bytes_removed += object.size;
                    }
                    // Another node's sweep got there first.
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        tracing::warn!(object = %object.location, error = %e, "could not remove an expired output")
                    }
                }
            }
            Ok(report)
        })?
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn presigned_url(
        &self,
        name: &OutputName,
        expires_in: Duration,
    ) -> Result<Option<String>, StoreError> {
        let s3 = self.s3.clone();
        let path = self.object_of(name);
        self.bridge.run(async move {
            s3.signed_url(object_store::signer::Method::GET, &path, expires_in)
                .await
                .map(|url| Some(url.to_string()))
                .map_err(|e| backend(&format!("could not sign a URL for {path}"), e))
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_a_bucket_and_an_optional_prefix() {
        assert_eq!(
            S3Config::parse_url("s3://outputs").unwrap(),
            ("outputs".into(), String::new())
        );
        assert_eq!(
            S3Config::parse_url("s3://outputs/head/shots/").unwrap(),
            ("outputs".into(), "head/shots".into())
        );
        assert!(S3Config::parse_url("s3:///x").is_err());
        assert!(S3Config::parse_url("https://bucket").is_err());
    }
}
