//! Outputs as plain files in one directory. Names are validated `OutputName`s (so a served name
//! can never leave the directory), writes go through a temp file + rename (so readers never see
//! a partial image), and a file's age is its modification time.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use headshot_core::store::{OutputFormat, OutputName, OutputStore, StoreError, SweepReport};

/// Outputs are served for 24 hours, as the hosted service documents.
pub const DEFAULT_OUTPUT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Temp files start with this, which no valid `OutputName` can (a prefix never starts with '.').
const TEMP_PREFIX: &str = ".tmp-";

/// A fresh file prefix: a random UUID v4 (122 random bits from the OS generator), hyphenated,
/// which is the shape ModelsLab's own `file_prefix` has.
pub fn random_prefix() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `data:image/png;base64,...`, the content of a `.base64` output.
pub fn png_data_uri(png: &[u8]) -> String {
    let mut out = String::from("data:image/png;base64,");
    base64::engine::general_purpose::STANDARD.encode_string(png, &mut out);
    out
}

/// The bytes to store for an encoded PNG in the given output format.
pub fn encode_output(format: OutputFormat, png: &[u8]) -> Vec<u8> {
    match format {
        OutputFormat::Png => png.to_vec(),
        OutputFormat::Base64 => png_data_uri(png).into_bytes(),
    }
}

/// Output files in a local directory, expiring `ttl` after they were written.
#[derive(Debug, Clone)]
pub struct LocalDiskOutputStore {
    dir: PathBuf,
    ttl: Duration,
}

impl LocalDiskOutputStore {
    /// Uses (and creates if needed) `dir`; files older than `ttl` are no longer served.
    pub fn open(dir: impl Into<PathBuf>, ttl: Duration) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(LocalDiskOutputStore { dir, ttl })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path a name is stored at; safe because `OutputName` admits only `[A-Za-z0-9_-]`
    /// prefixes, a decimal index and a fixed extension.
    pub fn path_of(&self, name: &OutputName) -> PathBuf {
        self.dir.join(name.to_string())
    }

    fn is_expired(&self, modified: SystemTime, now: SystemTime) -> bool {
        match modified.checked_add(self.ttl) {
            Some(expires_at) => now >= expires_at,
            None => false,
        }
    }

    fn remove(&self, path: &Path, report: &mut SweepReport, len: u64) {
        match fs::remove_file(path) {
            Ok(()) => {
                report.files_removed += 1;
                report.bytes_removed += len;
            }
            // Someone else (another sweep, a delete) got there first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove expired output")
            }
        }
    }
}

/// Makes the rename itself durable. Best effort: some platforms cannot open directories.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn io_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl OutputStore for LocalDiskOutputStore {
    fn new_prefix(&self) -> String {
        random_prefix()
    }

    fn put(&self, name: &OutputName, contents: &[u8]) -> Result<(), StoreError> {
        let target = self.path_of(name);
        let temp = self
            .dir
            .join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let write = || -> io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            file.write_all(contents)?;
            file.sync_all()?;
            fs::rename(&temp, &target)?;
            sync_dir(&self.dir);
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&temp);
            io_error(&target, e)
        })
    }

    fn read(&self, name: &OutputName) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path_of(name);
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        let modified = meta.modified().map_err(|e| io_error(&path, e))?;
        if self.is_expired(modified, SystemTime::now()) {
            // Served for exactly the TTL, even if the sweep has not run yet.
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))? {
            let entry = entry.map_err(|e| io_error(&self.dir, e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|n| n.parse::<OutputName>().ok())
            else {
                continue;
            };
            if name.prefix() == prefix {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(&entry.path(), e)),
                }
            }
        }
        Ok(removed)
    }

    fn sweep_expired(&self, now: SystemTime) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))? {
            let entry = entry.map_err(|e| io_error(&self.dir, e))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            // Only touch files this store wrote: outputs and temp files left by a crash.
            let ours =
                file_name.starts_with(TEMP_PREFIX) || file_name.parse::<OutputName>().is_ok();
            if !ours {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let Ok(modified) = meta.modified() else {
                continue;
            };
            if self.is_expired(modified, now) {
                self.remove(&entry.path(), &mut report, meta.len());
            }
        }
        if report.files_removed > 0 {
            tracing::info!(
                files = report.files_removed,
                bytes = report.bytes_removed,
                "removed expired outputs"
            );
        }
        Ok(report)
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}
