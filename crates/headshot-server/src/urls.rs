//! The public URLs we hand out: output files and the fetch endpoint.

/// Path prefix under which output files are served.
pub const OUTPUTS_PATH: &str = "/outputs";
/// The fetch path `fetch_result` points at (the one modelslab-py uses).
pub const FETCH_PATH: &str = "/api/v6/image_editing/fetch";

#[derive(Clone, Debug)]
pub struct PublicUrls {
    base: String,
}

impl PublicUrls {
    /// `base` such as `https://headshots.example.com` (a trailing slash is ignored).
    pub fn new(base: &str) -> Self {
        PublicUrls {
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn output(&self, file_name: &str) -> String {
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
