//! headshot-server
