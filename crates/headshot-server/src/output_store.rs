//! Where outputs live (`--output-store`) and how clients reach them (`--public-outputs`): on
//! this machine's disk, or in an S3-compatible bucket that every node of a deployment shares,
//! served through the API (`proxy`) or as presigned URLs straight from the bucket.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use headshot_core::store::{OutputStore, StoreError};
use headshot_store::{LocalDiskOutputStore, S3Config, S3OutputStore};

/// SigV4 presigned URLs are valid for at most 7 days.
const MAX_PRESIGNED_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

#[derive(Clone, Debug, clap::Args)]
pub struct OutputStoreArgs {
    /// Where outputs are stored: unset for `{data dir}/outputs` on this machine, or
    /// `s3://bucket/optional/prefix` for an S3-compatible bucket (AWS, MinIO, R2, ...) shared by
    /// every node.
    #[arg(long, env = "HEADSHOT_OUTPUT_STORE")]
    pub output_store: Option<String>,

    /// The S3 server, e.g. `http://127.0.0.1:9000` for MinIO (path-style requests); unset for
    /// AWS itself.
    #[arg(long, env = "HEADSHOT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    #[arg(long, env = "HEADSHOT_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,

    /// The bucket's access key. Credentials are never looked up elsewhere (no instance
    /// metadata service): the server only talks to what its operator names.
    #[arg(long, env = "HEADSHOT_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,

    #[arg(long, env = "HEADSHOT_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// Time limit of one S3 request (seconds); an unreachable bucket fails the job's store step
    /// instead of hanging it.
    #[arg(long, env = "HEADSHOT_S3_TIMEOUT_SECS", default_value_t = 10)]
    pub s3_timeout_secs: u64,

    /// How output URLs reach clients: `proxy` (this server's `/outputs/...`, the default) or
    /// `presigned` (URLs signed for the output's lifetime, fetched from the bucket directly;
    /// S3 only).
    #[arg(long, env = "HEADSHOT_PUBLIC_OUTPUTS", value_enum, default_value_t = PublicOutputs::Proxy)]
    pub public_outputs: PublicOutputs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PublicOutputs {
    Proxy,
    Presigned,
}

impl OutputStoreArgs {
    /// Opens the configured store (an S3 bucket is checked to answer now).
    pub fn open(&self, data_dir: &Path, ttl: Duration) -> Result<Arc<dyn OutputStore>, StoreError> {
        let Some(url) = &self.output_store else {
            if self.public_outputs == PublicOutputs::Presigned {
                return Err(StoreError::Config(
                    "--public-outputs presigned needs an S3 --output-store; local files are served through /outputs".into(),
                ));
            }
            return Ok(Arc::new(LocalDiskOutputStore::open(
                data_dir.join("outputs"),
                ttl,
            )?));
        };
        let (bucket, key_prefix) = S3Config::parse_url(url)?;
        let (Some(access_key_id), Some(secret_access_key)) =
            (&self.s3_access_key_id, &self.s3_secret_access_key)
        else {
            return Err(StoreError::Config(format!(
                "the output store {url} needs --s3-access-key-id and --s3-secret-access-key \
                 (HEADSHOT_S3_ACCESS_KEY_ID, HEADSHOT_S3_SECRET_ACCESS_KEY)"
            )));
        };
        let config = S3Config {
            bucket,
            key_prefix,
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
            request_timeout: Duration::from_secs(self.s3_timeout_secs.max(1)),
            max_retries: 2,
        };
        Ok(Arc::new(S3OutputStore::open(&config, ttl)?))
    }

    /// How long a presigned URL handed out now stays valid; `None` when URLs are proxied.
    pub fn presigned_lifetime(&self, ttl: Duration) -> Option<Duration> {
        (self.public_outputs == PublicOutputs::Presigned).then(|| ttl.min(MAX_PRESIGNED_LIFETIME))
    }
}
