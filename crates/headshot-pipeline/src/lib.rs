//! The end-to-end head shot pipeline implementing `headshot_core::Generator`.

// Replacing flagged images (black / blur / pixelate / sensitive_content_text).
pub mod censor;
