//! ip_adapter
