//! headshot-store
