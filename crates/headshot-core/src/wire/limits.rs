//! Size limits on the free-text fields of a request. Everything a client sends as text is
//! echoed in responses and job records (and prompts are tokenised), so none may be unbounded.

use serde_json::Value;

use super::request::ValidationErrors;

/// Default longest `prompt` / `negative_prompt`, in characters: CLIP reads 77 tokens, and the
/// documented example's negative prompt is about 200 characters.
pub const DEFAULT_MAX_PROMPT_CHARS: usize = 2000;
/// Default longest `face_image` URL and `webhook` URL, in characters.
pub const DEFAULT_MAX_URL_CHARS: usize = 2048;
/// Default largest `track_id`, in bytes of its JSON text (it is echoed exactly, any type).
pub const DEFAULT_MAX_TRACK_ID_BYTES: usize = 1024;

/// Limits applied by [`super::HeadShotRequest::from_json_with_limits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextLimits {
    pub max_prompt_chars: usize,
    pub max_url_chars: usize,
    pub max_track_id_bytes: usize,
}

impl Default for TextLimits {
    fn default() -> Self {
        TextLimits {
            max_prompt_chars: DEFAULT_MAX_PROMPT_CHARS,
            max_url_chars: DEFAULT_MAX_URL_CHARS,
            max_track_id_bytes: DEFAULT_MAX_TRACK_ID_BYTES,
        }
    }
}

impl TextLimits {
    /// Adds "The {label} may not be greater than N characters." when `text` is too long.
    pub(crate) fn check_chars(
        errors: &mut ValidationErrors,
        field: &str,
        label: &str,
        text: &str,
        max: usize,
    ) {
        // `chars().nth` stops at the limit, so a 10 MB prompt is not counted to the end.
        if text.chars().nth(max).is_some() {
            errors.add(
                field,
                format!("The {label} may not be greater than {max} characters."),
            );
        }
    }

    pub(crate) fn check_track_id(&self, errors: &mut ValidationErrors, track_id: &Value) {
        let len = serde_json::to_string(track_id).map_or(usize::MAX, |s| s.len());
        if len > self.max_track_id_bytes {
            errors.add(
                "track_id",
                format!(
                    "The track id may not be greater than {} bytes.",
                    self.max_track_id_bytes
                ),
            );
        }
    }
}
