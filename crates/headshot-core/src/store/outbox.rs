//! The webhook outbox: a delivery is written with the finished record and stays pending until
//! it is acknowledged (delivered, or refused for good), so restarts resume it.

use serde::{Deserialize, Serialize};

use super::JobId;

/// One webhook to deliver. `body` is kept as the exact bytes sent, because receivers verify
/// the signature over them; `id` is the `webhook-id` header, the same on every attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub id: String,
    pub job_id: JobId,
    pub url: String,
    pub body: String,
    /// Milliseconds since the Unix epoch; pending deliveries are resumed oldest first.
    pub created_at_ms: u64,
}

impl WebhookDelivery {
    /// A delivery for job `job_id` with an id unique across restarts and stores.
    pub fn new(job_id: JobId, created_at_ms: u64, url: String, body: String) -> Self {
        WebhookDelivery {
            id: format!("msg_{job_id}_{created_at_ms}"),
            job_id,
            url,
            body,
            created_at_ms,
        }
    }
}
