//! Outbound HTTP for client-chosen URLs (face images, webhooks), guarded against SSRF.

pub mod client;
pub mod ip_policy;

pub use client::{FetchError, GuardedHttp, OutboundLimits};
