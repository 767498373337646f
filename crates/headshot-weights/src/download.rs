//! Hub downloads (feature `download`): hf-hub's blocking client writing into the same cache
//! `cache.rs` reads, with an indicatif progress bar per file.

#[cfg(feature = "download")]
mod imp {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
    use hf_hub::HFClientSync;
    use indicatif::{ProgressBar, ProgressStyle};

    use crate::resolve::ResolveOptions;

    pub const AVAILABLE: bool = true;

    /// Created lazily: a warm cache never builds an HTTP client.
    pub struct Downloader {
        cache_dir: PathBuf,
        progress: bool,
        client: Option<HFClientSync>,
    }

    impl Downloader {
        pub fn new(options: &ResolveOptions) -> Downloader {
            Downloader {
                cache_dir: options.cache_dir.clone(),
                progress: options.progress,
                client: None,
            }
        }

        fn client(&mut self) -> Result<&HFClientSync, String> {
            if self.client.is_none() {
                let client = hf_hub::HFClient::builder()
                    .cache_dir(self.cache_dir.clone())
                    .build()
                    .and_then(HFClientSync::from_inner)
                    .map_err(|e| format!("cannot create the hub client: {e}"))?;
                self.client = Some(client);
            }
            Ok(self.client.as_ref().expect("set above"))
        }

        pub fn download(
            &mut self,
            repo: &str,
            revision: &str,
            path_in_repo: &str,
        ) -> Result<PathBuf, String> {
            let show_progress = self.progress;
            let (owner, name) = repo
                .split_once('/')
                .ok_or_else(|| format!("repo \"{repo}\" is not owner/name"))?;
            let client = self.client()?;
            tracing::info!(
                repo,
                revision,
                file = path_in_repo,
                "downloading from the Hugging Face Hub"
            );
            let bar = BarHandler::new(format!("{repo}/{path_in_repo}"), show_progress);
            let finish = bar.bar.clone();
            let result = client
                .model(owner, name)
                .download_file()
                .filename(path_in_repo)
                .revision(revision)
                .progress(bar)
                .send()
                .map_err(|e| e.to_string());
            match &result {
                Ok(_) => finish.finish(),
                Err(_) => finish.abandon(),
            }
            result
        }
    }

    /// Turns hf-hub's download events into one byte-count bar.
    struct BarHandler {
        bar: ProgressBar,
        per_file: Mutex<HashMap<String, u64>>,
    }

    impl BarHandler {
        fn new(label: String, visible: bool) -> BarHandler {
            let bar = if visible {
                ProgressBar::new(0)
            } else {
                ProgressBar::hidden()
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(label);
            BarHandler {
                bar,
                per_file: Mutex::new(HashMap::new()),
            }
        }
    }

    impl ProgressHandler for BarHandler {
        fn on_progress(&self, event: &ProgressEvent) {
            let ProgressEvent::Download(event) = event else {
                return;
            };
            match event {
                DownloadEvent::Start { total_bytes, .. } => self.bar.set_length(*total_bytes),
                DownloadEvent::Progress { files } => {
                    // Events carry per-file deltas of state; keep the latest count per file.
                    if let Ok(mut per_file) = self.per_file.lock() {
                        for file in files {
                            per_file.insert(file.filename.clone(), file.bytes_completed);
                        }
                        self.bar.set_position(per_file.values().sum());
                    }
                }
                DownloadEvent::AggregateProgress {
                    bytes_completed,
                    total_bytes,
                    ..
                } => {
                    self.bar.set_length(*total_bytes);
                    self.bar.set_position(*bytes_completed);
                }
                DownloadEvent::Complete => {}
            }
        }
    }
}

#[cfg(not(feature = "download"))]
mod imp {
    use std::path::PathBuf;

    use crate::resolve::ResolveOptions;

    pub const AVAILABLE: bool = false;

    pub struct Downloader;

    impl Downloader {
        pub fn new(_options: &ResolveOptions) -> Downloader {
            Downloader
        }

        pub fn download(
            &mut self,
            repo: &str,
            _revision: &str,
            path_in_repo: &str,
        ) -> Result<PathBuf, String> {
            Err(format!(
                "cannot fetch {repo}/{path_in_repo}: built without the `download` feature"
            ))
        }
    }
}

pub(crate) use imp::{Downloader, AVAILABLE};
