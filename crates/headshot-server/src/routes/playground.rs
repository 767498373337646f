//! The playground at `/`: one self-contained page (no external script, style or font) that
//! submits through the public API and polls `fetch_result`, as any client would. Its inline
//! script and style are allowed by their SHA-256 in the Content-Security-Policy, so the page
//! runs under a policy that forbids everything else.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::state::AppState;

pub const PAGE: &str = include_str!("playground.html");

/// `'sha256-…'` sources of the page's inline `<style>` and `<script>`.
static INLINE_HASHES: LazyLock<(String, String)> = LazyLock::new(|| {
    (
        hash_source(inline_element(PAGE, "style")),
        hash_source(inline_element(PAGE, "script")),
    )
});

/// The playground page
#[utoipa::path(
    get,
    path = "/",
    tag = "operations",
    responses((status = 200, description = "A one-page playground that submits through this API (no external script, style or font)", content_type = "text/html"))
)]
pub async fn page(State(state): State<AppState>) -> Response {
    let csp = content_security_policy(state.jobs.urls.base());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        PAGE,
    )
        .into_response()
}

/// The page may talk to and show images from its own origin and the public base URL's (where
/// `fetch_result` and the outputs point, e.g. behind a proxy), and nothing else.
pub fn content_security_policy(public_base_url: &str) -> String {
    let (style, script) = &*INLINE_HASHES;
    let public = origin_of(public_base_url).unwrap_or_default();
    format!(
        "default-src 'none'; script-src {script}; style-src {style}; \
         img-src 'self' {public} data: blob:; connect-src 'self' {public}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// `scheme://host[:port]` of an http(s) URL, if it holds nothing a policy could misread.
fn origin_of(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host_end = rest.find('/').unwrap_or(rest.len());
    let origin = &url[..url.len() - rest.len() + host_end];
    let safe = |c: char| c.is_ascii_alphanumeric() || "-.:[]".contains(c);
    (host_end > 0 && rest[..host_end].chars().all(safe)).then_some(origin)
}

/// The text of the one `<tag>…</tag>` element of `page` (opening tag without attributes).
fn inline_element<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = page.find(&open).expect("the page has the element") + open.len();
    let end = start + page[start..].find(&format!("</{tag}>")).expect("closed");
    &page[start..end]
}

fn hash_source(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let csp = content_security_policy("https://headshots.example.com/base/");
        let script = inline_element(PAGE, "script");
        assert!(script.contains("image_editing/head_shot"), "{script}");
        assert!(csp.contains(&format!("script-src {}", hash_source(script))));
        assert!(csp.contains(&format!(
            "style-src {}",
            hash_source(inline_element(PAGE, "style"))
        )));
        assert!(csp.contains("connect-src 'self' https://headshots.example.com;"));
        assert_eq!(PAGE.matches("<script").count(), 1, "one inline script");
        assert!(
            !PAGE.contains("src=\"http"),
            "nothing loaded from elsewhere"
        );
    }

    #[test]
    fn only_plain_origins_enter_the_policy() {
        assert_eq!(
            origin_of("http://127.0.0.1:8080"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin_of("https://[::1]:9/x"), Some("https://[::1]:9"));
        assert_eq!(origin_of("https://a.example; script-src *"), None);
        assert_eq!(origin_of("ftp://a.example"), None);
        assert_eq!(origin_of("https://"), None);
    }
}
