//! Webhook delivery from the job store's outbox: signed as Standard Webhooks
//! (<https://www.standardwebhooks.com>: `webhook-id`, `webhook-timestamp`, `webhook-signature`),
//! retried with exponential back-off on transient errors, and acknowledged (removed from the
//! outbox) once delivered, refused for good, or out of retries. A restart resumes whatever is
//! still pending, with the same `webhook-id`, so receivers can drop duplicates.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};
use base64::Engine as _;
use headshot_core::store::{unix_millis, JobRecord, StoreError, WebhookDelivery};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::bodies::webhook_body;
use crate::finish::JobContext;
use crate::net::{FetchError, GuardedHttp};
use crate::urls::PublicUrls;

/// Prefix of Standard Webhooks secrets; the rest is the base64 key.
const SECRET_PREFIX: &str = "whsec_";

/// The operator's signing secret (`whsec_<base64>`). Its bytes never appear in logs.
#[derive(Clone)]
pub struct WebhookSecret(Arc<Vec<u8>>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl FromStr for WebhookSecret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let encoded = s.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
            format!("a webhook secret starts with '{SECRET_PREFIX}' followed by base64 (e.g. {SECRET_PREFIX}$(openssl rand -base64 32))")
        })?;
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let key = engine.decode(encoded).map_err(|e| {
            format!("the webhook secret after '{SECRET_PREFIX}' is not base64: {e}")
        })?;
        if key.len() < 16 {
            return Err("the webhook secret must hold at least 16 bytes".to_string());
        }
        Ok(WebhookSecret(Arc::new(key)))
    }
}

impl WebhookSecret {
    /// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
    pub fn sign(&self, id: &str, timestamp: u64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!("v1,{signature}")
    }
}

/// Webhook delivery settings.
#[derive(Clone, Debug)]
pub struct WebhookPolicy {
    pub retries: usize,
    pub first_backoff: Duration,
    pub timeout: Duration,
    /// Signs every delivery when set; without it the id and timestamp headers are still sent.
    pub secret: Option<WebhookSecret>,
}

impl WebhookPolicy {
    /// The longest one delivery can take with every retry (a jittered delay is at most twice
    /// its base, and the base is capped at 32 first back-offs). A delivery still pending after
    /// this was being sent by a node that died.
    pub fn longest_delivery(&self) -> Duration {
        let attempts = self.retries.saturating_add(1).min(u32::MAX as usize) as u32;
        (self.first_backoff.saturating_mul(64) + self.timeout).saturating_mul(attempts)
    }
}

/// The outbox entry for a finished record, `None` if it has no webhook.
pub fn delivery_for(record: &JobRecord, urls: &PublicUrls) -> Option<WebhookDelivery> {
    let url = record.webhook.clone()?;
    let body = serde_json::to_string(&webhook_body(record, urls)?).ok()?;
    Some(WebhookDelivery::new(
        record.id,
        unix_millis(SystemTime::now()),
        url,
        body,
    ))
}

/// Errors no retry can fix: the URL is unusable, or the receiver refused the request itself
/// (a 4xx other than 408 Request Timeout and 429 Too Many Requests).
pub fn is_permanent(e: &FetchError) -> bool {
    match e {
        FetchError::InvalidUrl(_) | FetchError::Blocked { .. } => true,
        FetchError::Status(code) => (400..500).contains(code) && !matches!(code, 408 | 429),
        _ => false,
    }
}

/// The three Standard Webhooks headers for one attempt (the timestamp is the attempt's).
fn headers(
    delivery: &WebhookDelivery,
    secret: Option<&WebhookSecret>,
) -> Vec<(&'static str, String)> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut headers = vec![
        ("webhook-id", delivery.id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
    ];
    if let Some(secret) = secret {
        headers.push((
            "webhook-signature",
            secret.sign(&delivery.id, timestamp, &delivery.body),
        ));
    }
    headers
}

/// POSTs `delivery`, retrying transient failures with exponential back-off.
pub async fn deliver(
    delivery: &WebhookDelivery,
    http: &GuardedHttp,
    policy: &WebhookPolicy,
) -> Result<(), FetchError> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.first_backoff)
        .with_max_delay(policy.first_backoff.saturating_mul(32))
        .with_max_times(policy.retries)
        .with_jitter();
    let attempt = || async {
        let headers = headers(delivery, policy.secret.as_ref());
        http.post_json_text(&delivery.url, &delivery.body, &headers, policy.timeout)
            .await
    };
    attempt
        .retry(backoff)
        .when(|e| !is_permanent(e))
        .notify(|e, delay| {
            tracing::warn!(id = delivery.job_id, webhook_id = %delivery.id, error = %e, retry_in = ?delay, "webhook delivery failed; retrying");
        })
        .await
        .map(|_| ())
}

/// Delivers in the background, then removes the delivery from the outbox. If the server stops
/// first, the delivery stays pending and [`resume_outbox`] sends it after the restart.
pub fn spawn_delivery(ctx: JobContext, delivery: WebhookDelivery) {
    let tracker = ctx.deliveries.clone();
    tracker.spawn(async move {
        let outcome = tokio::select! {
            outcome = deliver(&delivery, &ctx.http, &ctx.webhook) => outcome,
            () = ctx.stop_deliveries.cancelled() => {
                tracing::info!(webhook_id = %delivery.id, "server stopping; the webhook stays in the outbox");
                return;
            }
        };
        match &outcome {
            Ok(()) => {
                metrics::counter!("headshot_webhooks_total", "outcome" => "delivered").increment(1);
                tracing::info!(id = delivery.job_id, webhook_id = %delivery.id, "webhook delivered");
            }
            Err(e) => {
                metrics::counter!("headshot_webhooks_total", "outcome" => "failed").increment(1);
                tracing::error!(id = delivery.job_id, webhook_id = %delivery.id, error = %e, permanent = is_permanent(e), "webhook delivery gave up");
            }
        }
        let jobs = ctx.jobs.clone();
        let id = delivery.id.clone();
        match tokio::task::spawn_blocking(move || jobs.ack_webhook(&id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(webhook_id = %delivery.id, error = %e, "could not remove the webhook from the outbox"),
            Err(e) => tracing::error!(webhook_id = %delivery.id, error = %e, "removing the webhook from the outbox panicked"),
        }
    });
}

/// Starts delivering every webhook a previous run left pending; returns how many.
pub fn resume_outbox(ctx: &JobContext) -> Result<usize, StoreError> {
    let pending = ctx.jobs.pending_webhooks()?;
    let count = pending.len();
    for delivery in pending {
        spawn_delivery(ctx.clone(), delivery);
    }
    Ok(count)
}

/// Beside a shared outbox (many nodes, one Redis): once per [`WebhookPolicy::longest_delivery`],
/// sends again the deliveries pending for longer than that, whose node died mid-delivery (a
/// live node has delivered, refused or given up each of its own by then). At least once: a
/// receiver drops a copy by its `webhook-id`. Stops with the deliveries.
pub fn spawn_outbox_takeover(ctx: JobContext) {
    let window = ctx.webhook.longest_delivery().max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(window);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = ctx.stop_deliveries.cancelled() => break,
                _ = tick.tick() => {}
            }
            let jobs = ctx.jobs.clone();
            let pending = match tokio::task::spawn_blocking(move || jobs.pending_webhooks()).await {
                Ok(Ok(pending)) => pending,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not read the shared outbox");
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the shared outbox panicked");
                    continue;
                }
            };
            let cutoff = unix_millis(SystemTime::now()).saturating_sub(window.as_millis() as u64);
            for delivery in pending.into_iter().filter(|d| d.created_at_ms < cutoff) {
                tracing::info!(webhook_id = %delivery.id, id = delivery.job_id, "taking over a webhook whose node stopped");
                spawn_delivery(ctx.clone(), delivery);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_outlives_no_retry_window() {
        let policy = WebhookPolicy {
            retries: 5,
            first_backoff: Duration::from_millis(1000),
            timeout: Duration::from_secs(20),
            secret: None,
        };
        // Six attempts, each at most a 20 s timeout plus a jittered, capped delay.
        assert_eq!(
            policy.longest_delivery(),
            Duration::from_secs(6 * (64 + 20))
        );
    }

    #[test]
    fn signs_the_standard_webhooks_example() {
        // The test vector of the Standard Webhooks reference libraries.
        let secret: WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_need_the_prefix_and_base64() {
        assert!("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            .parse::<WebhookSecret>()
            .is_err());
        assert!("whsec_not base64!".parse::<WebhookSecret>().is_err());
        assert!("whsec_c2hvcnQ=".parse::<WebhookSecret>().is_err());
    }

    #[test]
    fn permanent_errors() {
        assert!(is_permanent(&FetchError::InvalidUrl("x".into())));
        assert!(is_permanent(&FetchError::Status(404)));
        assert!(is_permanent(&FetchError::Status(400)));
        for transient in [408, 429, 500, 503] {
            assert!(!is_permanent(&FetchError::Status(transient)), "{transient}");
        }
        assert!(!is_permanent(&FetchError::Network("reset".into())));
    }
}
