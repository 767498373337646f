//! The public URLs we hand out: output files and the fetch endpoint.

use std::sync::Arc;
use std::time::Duration;

use headshot_core::store::{OutputName, OutputStore};

/// Path prefix under which output files are served.
pub const OUTPUTS_PATH: &str = "/outputs";
/// The fetch path `fetch_result` points at (the one modelslab-py uses).
pub const FETCH_PATH: &str = "/api/v6/image_editing/fetch";

#[derive(Clone)]
pub struct PublicUrls {
    base: String,
    /// With `--public-outputs presigned`: the store that signs output URLs, and for how long.
    presigned: Option<(Arc<dyn OutputStore>, Duration)>,
}

impl std::fmt::Debug for PublicUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicUrls")
            .field("base", &self.base)
            .field("presigned_for", &self.presigned.as_ref().map(|(_, d)| d))
            .finish()
    }
}

impl PublicUrls {
    /// `base` such as `https://headshots.example.com` (a trailing slash is ignored).
    pub fn new(base: &str) -> Self {
        PublicUrls {
            base: base.trim_end_matches('/').to_string(),
            presigned: None,
        }
    }

    /// Output URLs become `store`'s presigned URLs, valid for `lifetime` from when they are
    /// handed out.
    pub fn with_presigned_outputs(
        mut self,
        store: Arc<dyn OutputStore>,
        lifetime: Duration,
    ) -> Self {
        self.presigned = Some((store, lifetime));
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Where clients download an output: a presigned URL when so configured (signing needs no
    /// network call), else this server's `/outputs/` route, which also serves when signing fails.
    pub fn output(&self, file_name: &str) -> String {
        if let Some((store, lifetime)) = &self.presigned {
            let signed = file_name
                .parse::<OutputName>()
                .map_err(|e| e.to_string())
                .and_then(|name| {
                    store
                        .presigned_url(&name, *lifetime)
                        .map_err(|e| e.to_string())
                });
            match signed {
                Ok(Some(url)) => return url,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(file_name, error = %e, "could not presign an output URL; handing out the proxied one")
                }
            }
        }
        format!("{}{OUTPUTS_PATH}/{file_name}", self.base)
    }

    pub fn fetch(&self, id: u64) -> String {
        format!("{}{FETCH_PATH}/{id}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_urls_without_double_slashes() {
        let urls = PublicUrls::new("http://127.0.0.1:9/");
        assert_eq!(urls.output("a-0.png"), "http://127.0.0.1:9/outputs/a-0.png");
        assert_eq!(
            urls.fetch(3),
            "http://127.0.0.1:9/api/v6/image_editing/fetch/3"
        );
    }
}
