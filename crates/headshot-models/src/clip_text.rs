//! clip_text
