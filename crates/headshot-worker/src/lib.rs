//! headshot-worker
