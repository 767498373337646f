//! Persistence traits (`OutputStore`, `JobStore`) and the records they keep; implemented in
//! `headshot-store`. Both traits are synchronous (an embedded database and the local disk are
//! fast); async callers run them on a blocking thread when latency matters.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::job::GenerationJob;

mod outbox;

pub use outbox::WebhookDelivery;

/// Job ids are the integers the wire answers with (`"id": 42`); they only ever grow.
pub type JobId = u64;

/// Where a job is in its life. Serialised in lower case, as the wire spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted and waiting for the worker.
    Queued,
    /// The worker is generating its images.
    Processing,
    /// Images were generated and stored.
    Success,
    /// Generation failed (the record's `error` says why).
    Failed,
}

impl JobStatus {
    /// Success or failure: nothing will change the record any more (except expiry).
    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Success | JobStatus::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything needed to answer `fetch`, rebuild the success body and deliver the webhook after a
/// restart. Output *file names* are kept, not URLs, so a changed public base URL still works.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub status: JobStatus,
    /// Milliseconds since the Unix epoch (see [`unix_millis`]).
    pub created_at_ms: u64,
    /// Set when the job reached `success` or `failed`; record expiry counts from here.
    pub finished_at_ms: Option<u64>,
    /// The normalised request as echoed in the response's `meta` (values actually used).
    pub meta: serde_json::Value,
    /// The unguessable prefix of this job's output files (also `meta.file_prefix`).
    pub file_prefix: String,
    /// Whether outputs are PNG files or `.base64` data-URI text files.
    pub output_format: OutputFormat,
    /// How many images the job will produce (for `future_links` while it runs).
    pub samples: u32,
    /// File names of the stored outputs, in order (filled on success).
    pub output_files: Vec<String>,
    pub nsfw_content_detected: bool,
    /// Why the job failed (the message shown to the client).
    pub error: Option<String>,
    /// Seconds the generation took (`generationTime` on the wire).
    pub generation_time_s: Option<f64>,
    /// The webhook URL as sent (already validated by the server), if any.
    pub webhook: Option<String>,
    /// `track_id` exactly as the client sent it (string, number, ...), echoed in webhooks.
    pub track_id: Option<serde_json::Value>,
    /// A keyed fingerprint of the API key that submitted the job (never the key itself); only
    /// that key may fetch it. `None`: written without keys (`--no-auth`, older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Per output, in order: the likeness of its face to the input identity (cosine of ArcFace
    /// embeddings), `None` where no face was found. `None` as a whole: not scored (no face
    /// analyzer, or a record from before scores existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_similarity: Option<Vec<Option<f32>>>,
    /// How many faces the input photo shows (`face_index` picked among them, largest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faces_found: Option<u32>,
    /// Each output's own seed, for best-of-N jobs (regenerate one with `seed` = it, `samples` 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<u64>>,
    /// `style` as the request sent it (no effect on the images), echoed beside `meta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
}

impl JobRecord {
    /// A fresh `queued` record created now. Outputs, timings and errors start empty.
    pub fn queued(
        id: JobId,
        meta: serde_json::Value,
        file_prefix: impl Into<String>,
        output_format: OutputFormat,
        samples: u32,
    ) -> Self {
        JobRecord {
            id,
            status: JobStatus::Queued,
            created_at_ms: unix_millis(SystemTime::now()),
            finished_at_ms: None,
            meta,
            file_prefix: file_prefix.into(),
            output_format,
            samples,
            output_files: Vec::new(),
            nsfw_content_detected: false,
            error: None,
            generation_time_s: None,
            webhook: None,
            track_id: None,
            owner: None,
            face_similarity: None,
            faces_found: None,
            seeds: None,
            style: None,
        }
    }

    /// The output names this job has (on success) or will have (while it runs).
    pub fn planned_output_names(&self) -> Vec<OutputName> {
        (0..self.samples as usize)
            .filter_map(|i| OutputName::new(&self.file_prefix, i, self.output_format).ok())
            .collect()
    }

    /// Marks the record `processing`: a device has started on the job.
    pub fn mark_processing(&mut self) {
        self.status = JobStatus::Processing;
    }

    /// Marks the record `success` with its stored outputs.
    pub fn mark_success(
        &mut self,
        output_files: Vec<String>,
        nsfw_content_detected: bool,
        generation_time: Duration,
    ) {
        self.status = JobStatus::Success;
        self.output_files = output_files;
        self.nsfw_content_detected = nsfw_content_detected;
        self.generation_time_s = Some(generation_time.as_secs_f64());
        self.error = None;
        self.finished_at_ms = Some(unix_millis(SystemTime::now()));
    }

    /// Finished (success or failed) before `cutoff_ms` (Unix milliseconds): due for expiry.
    pub fn is_finished_before(&self, cutoff_ms: u64) -> bool {
        self.status.is_finished() && self.finished_at_ms.is_some_and(|t| t < cutoff_ms)
    }

    /// Marks the record `failed` with a message for the client.
    pub fn mark_failed(&mut self, message: impl Into<String>) {
        self.status = JobStatus::Failed;
        self.error = Some(message.into());
        self.finished_at_ms = Some(unix_millis(SystemTime::now()));
    }
}

/// Milliseconds since the Unix epoch; times before it count as 0.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// Errors of either store. Messages say what to check, since they end up in operator logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} is not in the job store")]
    JobNotFound(JobId),
    #[error(transparent)]
    InvalidName(#[from] InvalidOutputName),
    #[error("output store I/O failed at {path}: {source}; check the output directory exists and is writable")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("job store database failed: {0}; check the database file is writable and not opened by another server")]
    Database(String),
    #[error("job record {id} could not be (de)serialised: {message}")]
    Corrupt { id: JobId, message: String },
    /// A store on another machine (an object store, a database server) failed or did not answer.
    #[error("{what}: {source}")]
    Remote {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store is configured wrongly (a bad URL, a missing credential).
    #[error("{0}")]
    Config(String),
}

/// How outputs are written: PNG files, or `.base64` text holding `data:image/png;base64,...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Png,
    Base64,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Base64 => "base64",
        }
    }

    /// The `Content-Type` to serve the file with.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Png => "image/png",
            OutputFormat::Base64 => "text/plain; charset=utf-8",
        }
    }
}

/// A file name was rejected. Served names come from URLs, so this is user input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid output file name '{name}': {reason}")]
pub struct InvalidOutputName {
    pub name: String,
    pub reason: &'static str,
}

/// Longest prefix accepted (a UUID is 36 characters).
pub const MAX_PREFIX_LEN: usize = 64;

/// Whether `prefix` is a syntactically valid output prefix: 1..=64 of `[A-Za-z0-9_-]`.
/// Nothing else is allowed, so a name built from it can never leave the output directory.
pub fn is_valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A validated output file name `{prefix}-{index}.{png|base64}`. The only way to build one is
/// through [`OutputName::new`] or parsing, both of which validate every character.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutputName {
    prefix: String,
    index: usize,
    format: OutputFormat,
}

impl OutputName {
    pub fn new(
        prefix: &str,
        index: usize,
        format: OutputFormat,
    ) -> Result<Self, InvalidOutputName> {
        if !is_valid_prefix(prefix) {
            return Err(InvalidOutputName {
                name: prefix.to_string(),
                reason: "the prefix must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'",
            });
        }
        Ok(OutputName {
            prefix: prefix.to_string(),
            index,
            format,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }
}

impl fmt::Display for OutputName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}.{}",
            self.prefix,
            self.index,
            self.format.extension()
        )
    }
}

impl FromStr for OutputName {
    type Err = InvalidOutputName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidOutputName {
            name: name.chars().take(100).collect(),
            reason,
        };
        let (stem, ext) = name
            .rsplit_once('.')
            .ok_or_else(|| invalid("expected an extension .png or .base64"))?;
        let format = match ext {
            "png" => OutputFormat::Png,
            "base64" => OutputFormat::Base64,
            _ => return Err(invalid("expected an extension .png or .base64")),
        };
        let (prefix, index) = stem
            .rsplit_once('-')
            .ok_or_else(|| invalid("expected {prefix}-{index}"))?;
        // Digits only: `usize::from_str` alone would also take a leading '+'.
        if index.is_empty() || index.len() > 6 || !index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("the index must be a small decimal number"));
        }
        let index = index
            .parse()
            .map_err(|_| invalid("the index must be a small decimal number"))?;
        if !is_valid_prefix(prefix) {
            return Err(invalid(
                "the prefix must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'",
            ));
        }
        Ok(OutputName {
            prefix: prefix.to_string(),
            index,
            format,
        })
    }
}

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub files_removed: usize,
    pub bytes_removed: u64,
}

/// Where generated images live until they expire. Implementations must make names unguessable
/// (prefixes with >= 122 random bits) and write atomically, so a served file is never partial.
pub trait OutputStore: Send + Sync + 'static {
    /// A fresh unguessable file prefix (e.g. a random UUID v4).
    fn new_prefix(&self) -> String;

    /// Stores `contents` under `name` (PNG bytes, or the data-URI text for `.base64`),
    /// replacing any previous file of that name.
    fn put(&self, name: &OutputName, contents: &[u8]) -> Result<(), StoreError>;

    /// The contents of a stored, unexpired file; `None` if it does not exist or has expired.
    fn read(&self, name: &OutputName) -> Result<Option<Vec<u8>>, StoreError>;

    /// Deletes every file of `prefix`; returns how many were removed.
    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError>;

    /// Deletes every file older than the store's TTL as seen at `now`.
    fn sweep_expired(&self, now: SystemTime) -> Result<SweepReport, StoreError>;

    /// How long outputs are served.
    fn ttl(&self) -> Duration;

    /// A URL clients can fetch `name` from directly for `expires_in`, without this server in
    /// between (an object store's presigned URL); `None` where the store has no such URLs.
    fn presigned_url(
        &self,
        _name: &OutputName,
        _expires_in: Duration,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
}

/// Job records, kept so `fetch` works across restarts. Ids come from a persisted counter.
pub trait JobStore: Send + Sync + 'static {
    /// Reserves the next id (strictly greater than every id handed out before, also across
    /// restarts). Ids are never reused, even if the record is never inserted.
    fn next_id(&self) -> Result<JobId, StoreError>;

    /// Stores a new record (or replaces one with the same id).
    fn insert(&self, record: &JobRecord) -> Result<(), StoreError>;

    /// Replaces an existing record; `JobNotFound` if there is none (e.g. it expired).
    fn update(&self, record: &JobRecord) -> Result<(), StoreError>;

    fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError>;

    /// Records still queued or processing, oldest first: the queue of record. After a restart
    /// the server runs them again in this order (from [`JobStore::input`]) before new jobs.
    fn list_unfinished(&self) -> Result<Vec<JobRecord>, StoreError>;

    /// Stores a new record together with what the job needs to run, in one write, so an
    /// accepted job is never without its inputs.
    fn insert_with_input(&self, record: &JobRecord, job: &GenerationJob) -> Result<(), StoreError>;

    /// The job of an unfinished record; `None` once it finished (or if it was lost).
    fn input(&self, id: JobId) -> Result<Option<GenerationJob>, StoreError>;

    /// Replaces the record of a job that reached `success` or `failed`, drops its inputs and
    /// queues its webhook (if any) in the outbox, all in one write: a crash never leaves a
    /// finished job whose webhook is forgotten. `JobNotFound` if the record is gone.
    fn finish(
        &self,
        record: &JobRecord,
        webhook: Option<&WebhookDelivery>,
    ) -> Result<(), StoreError>;

    /// Webhooks not yet acknowledged, oldest first.
    fn pending_webhooks(&self) -> Result<Vec<WebhookDelivery>, StoreError>;

    /// Removes a delivery from the outbox (delivered, or given up for good). Unknown ids are
    /// not an error (another attempt may have acknowledged it).
    fn ack_webhook(&self, delivery_id: &str) -> Result<(), StoreError>;

    /// The secret stored under `name`, storing `candidate` first if there is none yet, so every
    /// server sharing this store uses the same one (e.g. to fingerprint API keys).
    fn get_or_init_secret(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Ids of finished records whose `finished_at` is before `cutoff`.
    fn list_expired(&self, cutoff: SystemTime) -> Result<Vec<JobId>, StoreError>;

    /// Removes the finished records whose `finished_at` is before `cutoff` and returns them,
    /// so the caller can delete their outputs too.
    fn purge_expired(&self, cutoff: SystemTime) -> Result<Vec<JobRecord>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_name_round_trips() {
        let name = OutputName::new(
            "0b5a5cc1-8a86-4d58-9d7c-1f1e0e7f6c55",
            1,
            OutputFormat::Base64,
        )
        .unwrap();
        let text = name.to_string();
        assert_eq!(text, "0b5a5cc1-8a86-4d58-9d7c-1f1e0e7f6c55-1.base64");
        assert_eq!(text.parse::<OutputName>().unwrap(), name);
        assert_eq!(
            "abc-0.png".parse::<OutputName>().unwrap(),
            OutputName::new("abc", 0, OutputFormat::Png).unwrap()
        );
    }

    #[test]
    fn output_name_rejects_escapes_and_junk() {
        for bad in [
            "../etc-0.png",
            "..%2f-0.png",
            "a/b-0.png",
            "a\\b-0.png",
            "/abs-0.png",
            ".-0.png",
            "-0.png",
            "abc-+1.png",
            "abc-.png",
            "abc-1.jpg",
            "abc-1.png.tmp",
            "abc-1",
            "abc.png",
            "ab c-1.png",
            "abc-1.PNG",
            "",
            "abc-1234567.png",
        ] {
            assert!(bad.parse::<OutputName>().is_err(), "{bad:?} was accepted");
        }
        assert!(OutputName::new("../x", 0, OutputFormat::Png).is_err());
        assert!(OutputName::new(&"a".repeat(65), 0, OutputFormat::Png).is_err());
    }

    #[test]
    fn record_lifecycle_and_serde() {
        let mut rec = JobRecord::queued(
            7,
            serde_json::json!({"prompt": "a", "seed": 12}),
            "pfx",
            OutputFormat::Png,
            2,
        );
        rec.track_id = Some(serde_json::json!(12345));
        assert_eq!(rec.status, JobStatus::Queued);
        assert_eq!(
            rec.planned_output_names()
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            ["pfx-0.png", "pfx-1.png"]
        );
        rec.mark_success(vec!["pfx-0.png".into()], true, Duration::from_millis(1500));
        assert!(rec.status.is_finished());
        assert_eq!(rec.generation_time_s, Some(1.5));
        let json = serde_json::to_string(&rec).unwrap();
        assert!(json.contains("\"status\":\"success\""));
        let back: JobRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
        rec.mark_failed("boom");
        assert_eq!(rec.status, JobStatus::Failed);
        assert_eq!(rec.error.as_deref(), Some("boom"));
    }
}
