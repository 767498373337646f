//! An HTTP client for URLs chosen by clients. Every hop is checked: the URL scheme, an IP
//! literal host against the address policy, and names through a resolver that drops
//! non-public addresses (so DNS rebinding to 127.0.0.1 is refused at connect time). Redirects
//! are followed by hand so each new location passes the same checks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{StatusCode, Url};

use super::ip_policy::refusal_reason;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("'{0}' is not a valid http(s) URL")]
    InvalidUrl(String),
    #[error("the URL host {host} is refused: it is a {reason}; only public internet addresses may be fetched (operators can pass --allow-private-urls)")]
    Blocked { host: String, reason: &'static str },
    #[error("the URL carries a user name or password, which would be sent to its host; put no credentials in URLs (operators can pass --allow-url-credentials)")]
    Credentials,
    #[error("the URL host has {0} characters; host names have at most 253")]
    HostTooLong(usize),
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    #[error("a redirect had no usable Location header")]
    BadRedirect,
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("the response is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the request failed: {0}")]
    Network(String),
}

/// The longest DNS name (RFC 1035), brackets of an IPv6 literal included with room to spare.
const MAX_HOST_LEN: usize = 255;

/// Limits for one outbound request.
#[derive(Clone, Copy, Debug)]
pub struct OutboundLimits {
    /// Whole request, redirects included.
    pub timeout: Duration,
    pub max_redirects: usize,
}

/// Resolves names with the system resolver, then keeps only addresses the policy allows.
#[derive(Clone, Copy, Debug)]
struct FilteringResolver {
    allow_private: bool,
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let total = addrs.len();
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allow_private || refusal_reason(a.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = if total == 0 {
                    format!("{host} did not resolve to any address").into()
                } else {
                    format!("{host} resolves only to non-public addresses, which are refused")
                        .into()
                };
                return Err(err);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The guarded client; cheap to clone.
#[derive(Clone, Debug)]
pub struct GuardedHttp {
    client: reqwest::Client,
    allow_private: bool,
    allow_credentials: bool,
}

impl GuardedHttp {
    pub fn new(allow_private: bool, connect_timeout: Duration) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf and bypass the address checks.
            .no_proxy()
            .connect_timeout(connect_timeout)
            .dns_resolver(Arc::new(FilteringResolver { allow_private }))
            .user_agent(concat!("headshot-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Network(format!("could not build the HTTP client: {e}")))?;
        Ok(GuardedHttp {
            client,
            allow_private,
            allow_credentials: false,
        })
    }

    /// Whether URLs may carry `user:password@` (reqwest sends it as Basic auth).
    pub fn allowing_url_credentials(mut self, allow: bool) -> Self {
        self.allow_credentials = allow;
        self
    }

    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Checks scheme and (for IP literals) the address. Names are checked by the resolver.
    pub fn check_url(&self, raw: &str) -> Result<Url, FetchError> {
        let url = Url::parse(raw.trim()).map_err(|_| FetchError::InvalidUrl(raw.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::InvalidUrl(raw.to_string()));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| FetchError::InvalidUrl(raw.to_string()))?
            .to_string();
        // No DNS name is longer; a longer host is garbage (or an attempt to bloat logs).
        if host.len() > MAX_HOST_LEN {
            return Err(FetchError::HostTooLong(host.len()));
        }
        if !self.allow_credentials && (!url.username().is_empty() || url.password().is_some()) {
            return Err(FetchError::Credentials);
        }
        if !self.allow_private {
            // IP literals never reach the resolver, so they are checked here.
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<IpAddr>() {
                if let Some(reason) = refusal_reason(ip) {
                    return Err(FetchError::Blocked {
                        host: ip.to_string(),
                        reason,
                    });
                }
            } else {
                // `localhost` is answered by the system without DNS; refuse it by name too.
                let d = host.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    return Err(FetchError::Blocked {
                        host: d,
                        reason: "loopback address",
                    });
                }
            }
        }
        Ok(url)
    }

    /// GETs `url` following up to `max_redirects` redirects, reading at most `max_bytes`.
    pub async fn get_bytes(
        &self,
        url: &str,
        max_bytes: usize,
        limits: OutboundLimits,
    ) -> Result<Vec<u8>, FetchError> {
        tokio::time::timeout(
            limits.timeout,
            self.get_bytes_inner(url, max_bytes, limits.max_redirects),
        )
        .await
        .map_err(|_| FetchError::Timeout(limits.timeout))?
    }

    async fn get_bytes_inner(
        &self,
        url: &str,
        max_bytes: usize,
        max_redirects: usize,
    ) -> Result<Vec<u8>, FetchError> {
        let mut current = self.check_url(url)?;
        let mut redirects = 0;
        loop {
            let mut response = self
                .client
                .get(current.clone())
                .send()
                .await
                .map_err(network)?;
            let status = response.status();
            if status.is_redirection() {
                redirects += 1;
                if redirects > max_redirects {
                    return Err(FetchError::TooManyRedirects(max_redirects));
                }
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or(FetchError::BadRedirect)?;
                let next = current
                    .join(location)
                    .map_err(|_| FetchError::BadRedirect)?;
                current = self.check_url(next.as_str())?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status(status.as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|n| n > max_bytes as u64)
            {
                return Err(FetchError::TooLarge { limit: max_bytes });
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(network)? {
                if body.len() + chunk.len() > max_bytes {
                    return Err(FetchError::TooLarge { limit: max_bytes });
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(body);
        }
    }

    /// POSTs a JSON body (webhooks). Redirects are not followed: a webhook that moved should
    /// be reconfigured, and re-POSTing to a new host would need the same checks anyway.
    pub async fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<StatusCode, FetchError> {
        let url = self.check_url(url)?;
        let response = self
            .client
            .post(url)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(network)?;
        let status = response.status();
        if status.is_success() {
            Ok(status)
        } else {
            Err(FetchError::Status(status.as_u16()))
        }
    }
}

impl GuardedHttp {
    /// POSTs `body` (JSON text, sent byte for byte so signatures over it hold) with extra
    /// `headers`. Redirects are not followed, as for [`GuardedHttp::post_json`].
    pub async fn post_json_text(
        &self,
        url: &str,
        body: &str,
        headers: &[(&'static str, String)],
        timeout: Duration,
    ) -> Result<StatusCode, FetchError> {
        let url = self.check_url(url)?;
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(timeout);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.map_err(network)?;
        let status = response.status();
        if status.is_success() {
            Ok(status)
        } else {
            Err(FetchError::Status(status.as_u16()))
        }
    }
}

fn network(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Network("timed out".to_string());
    }
    // The resolver's refusal is buried in the source chain; surface it.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    FetchError::Network(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded(allow_private: bool) -> GuardedHttp {
        GuardedHttp::new(allow_private, Duration::from_secs(2)).unwrap()
    }

    #[test]
    fn url_checks_without_the_flag() {
        let http = guarded(false);
        for refused in [
            "http://127.0.0.1/x.png",
            "http://127.1/x.png",
            "http://0x7f000001/x.png",
            "http://2130706433/x.png",
            "http://[::1]:8080/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://10.1.2.3/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0:80/",
            "http://localhost:3000/",
            "http://api.localhost./",
        ] {
            assert!(
                matches!(http.check_url(refused), Err(FetchError::Blocked { .. })),
                "{refused} should be refused"
            );
        }
        for invalid in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "not a url",
            "http://",
        ] {
            assert!(
                matches!(http.check_url(invalid), Err(FetchError::InvalidUrl(_))),
                "{invalid} should be invalid"
            );
        }
        assert!(http.check_url("https://example.com/face.jpg").is_ok());
        assert!(http.check_url("http://8.8.8.8/face.jpg").is_ok());
    }

    #[test]
    fn the_flag_allows_private_addresses() {
        let http = guarded(true);
        for allowed in [
            "http://127.0.0.1/x.png",
            "http://localhost:3000/",
            "http://[::1]/x",
        ] {
            assert!(http.check_url(allowed).is_ok(), "{allowed}");
        }
        assert!(matches!(
            http.check_url("gopher://x"),
            Err(FetchError::InvalidUrl(_))
        ));
    }

    #[tokio::test]
    async fn the_resolver_drops_non_public_addresses() {
        let name: Name = "localhost".parse().unwrap();
        let refused = FilteringResolver {
            allow_private: false,
        }
        .resolve(name)
        .await;
        assert!(
            refused.is_err(),
            "localhost resolves only to loopback addresses"
        );
        let name: Name = "localhost".parse().unwrap();
        let allowed = FilteringResolver {
            allow_private: true,
        }
        .resolve(name)
        .await
        .unwrap();
        assert!(allowed.into_iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn refused_urls_are_never_fetched() {
        // A live loopback listener: the request must fail on policy, not on a closed port.
        let http = guarded(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // `localhost.` with a trailing dot and odd case still hits the name check; an IPv6
        // literal is checked as a literal.
        for url in [
            format!("http://LOCALHOST.:{port}/"),
            format!("http://[::1]:{port}/"),
        ] {
            let err = http
                .get_bytes(
                    &url,
                    1024,
                    OutboundLimits {
                        timeout: Duration::from_secs(5),
                        max_redirects: 0,
                    },
                )
                .await
                .unwrap_err();
            assert!(matches!(err, FetchError::Blocked { .. }), "{url}: {err}");
        }
    }
}
