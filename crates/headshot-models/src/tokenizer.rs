//! CLIP BPE tokenizer, matching transformers' `CLIPTokenizer` as `StableDiffusionPipeline` calls it
//! (`padding="max_length"`, `max_length=model_max_length`, `truncation=True`).
//!
//! Real SD1.5 repos ship `tokenizer/vocab.json` + `merges.txt` only, so the `tokenizers` pipeline
//! is assembled here the way transformers' CLIP converter does (NFC, whitespace collapse,
//! lower-case, CLIP's split regex, byte-level alphabet, `</w>` end-of-word suffix); a
//! `tokenizer.json` in the folder is used instead when present. BOS/EOS, truncation and padding
//! are done here so both sources behave identically.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Errors while loading or running the tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read tokenizer file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokenizer file {path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("tokenizer folder {dir} has neither tokenizer.json nor vocab.json + merges.txt; point it at an SD1.5 `tokenizer/` folder")]
    MissingFiles { dir: PathBuf },
    #[error("cannot build the CLIP tokenizer from {dir}: {message}")]
    Build { dir: PathBuf, message: String },
    #[error("special token {token:?} ({role}) is not in the vocabulary of {dir}")]
    UnknownSpecialToken {
        dir: PathBuf,
        role: &'static str,
        token: String,
    },
    #[error("tokenizing the prompt failed: {0}")]
    Encode(String),
}

type Result<T> = std::result::Result<T, TokenizerError>;

/// CLIP's pre-tokenizer pattern (transformers' `CLIPTokenizer.pat`, without the two special
/// tokens, which `tokenizers` matches as added tokens).
const CLIP_SPLIT_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// `CLIPTokenizer` reads only this many merges (`merges[1 : 49152 - 256 - 2 + 1]`).
const MAX_MERGES: usize = 49152 - 256 - 2;

const DEFAULT_BOS: &str = "<|startoftext|>";
const DEFAULT_EOS: &str = "<|endoftext|>";
const DEFAULT_MAX_LENGTH: usize = 77;

/// A CLIP tokenizer producing fixed-length id sequences for the text encoder.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish()
    }
}

impl ClipTokenizer {
    /// Loads an SD1.5 `tokenizer/` folder: `tokenizer.json` if present, else `vocab.json` +
    /// `merges.txt`; special tokens and `model_max_length` from `special_tokens_map.json` /
    /// `tokenizer_config.json` when present (defaults: SD1.5's).
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let tokenizer_json = dir.join("tokenizer.json");
        let inner = if tokenizer_json.is_file() {
            tokenizers::Tokenizer::from_file(&tokenizer_json).map_err(|e| {
                TokenizerError::Build {
                    dir: dir.to_path_buf(),
                    message: e.to_string(),
                }
            })?
        } else {
            let vocab = dir.join("vocab.json");
            let merges = dir.join("merges.txt");
            if !vocab.is_file() || !merges.is_file() {
                return Err(TokenizerError::MissingFiles {
                    dir: dir.to_path_buf(),
                });
            }
            build_from_vocab_and_merges(dir, &vocab, &merges)?
        };
        let settings = SpecialTokenSettings::read(dir)?;
        Self::from_parts(inner, &settings, dir)
    }

    fn from_parts(
        mut inner: tokenizers::Tokenizer,
        settings: &SpecialTokenSettings,
        dir: &Path,
    ) -> Result<Self> {
        // Truncation and padding are ours; a tokenizer.json may carry its own settings.
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Build {
                dir: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        inner.with_padding(None);
        let id = |role: &'static str, token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| TokenizerError::UnknownSpecialToken {
                    dir: dir.to_path_buf(),
                    role,
                    token: token.to_string(),
                })
        };
        let bos_id = id("bos_token", &settings.bos)?;
        let eos_id = id("eos_token", &settings.eos)?;
        let pad_id = id("pad_token", &settings.pad)?;
        let max_length = settings.max_length;
        tracing::debug!(bos_id, eos_id, pad_id, max_length, "loaded CLIP tokenizer");
        Ok(Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            max_length,
        })
    }

    /// `[BOS] tokens… [EOS] [PAD]…`, truncated so that BOS + at most `max_length - 2` tokens +
    /// EOS fit, then padded to exactly `max_length` ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let cleaned = clean_text(text);
        let encoding = self
            .inner
            .encode(cleaned.as_str(), false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let budget = self.max_length.saturating_sub(2);
        let tokens = encoding.get_ids();
        let tokens = &tokens[..tokens.len().min(budget)];
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(tokens);
        ids.push(self.eos_id);
        ids.resize(self.max_length.max(ids.len()), self.pad_id);
        Ok(ids)
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
}

/// The special tokens and length read from the folder's json files.
struct SpecialTokenSettings {
    bos: String,
    eos: String,
    pad: String,
    max_length: usize,
}

impl SpecialTokenSettings {
    fn read(dir: &Path) -> Result<Self> {
        let special = read_optional_json(&dir.join("special_tokens_map.json"))?;
        let config = read_optional_json(&dir.join("tokenizer_config.json"))?;
        // special_tokens_map.json wins over tokenizer_config.json, as in transformers.
        let token = |key: &str| {
            [special.as_ref(), config.as_ref()]
                .into_iter()
                .flatten()
                .find_map(|v| token_content(v.get(key)?))
        };
        let bos = token("bos_token").unwrap_or_else(|| DEFAULT_BOS.to_string());
        let eos = token("eos_token").unwrap_or_else(|| DEFAULT_EOS.to_string());
        let pad = token("pad_token").unwrap_or_else(|| eos.clone());
        // transformers stores a huge sentinel when no length is known.
        let max_length = config
            .as_ref()
            .and_then(|c| c.get("model_max_length")?.as_u64())
            .filter(|n| (2..=1 << 20).contains(n))
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_MAX_LENGTH);
        Ok(Self {
            bos,
            eos,
            pad,
            max_length,
        })
    }
}

/// A special token is either a plain string or an `AddedToken` object with `content`.
fn token_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn read_optional_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| TokenizerError::Json {
            path: path.to_path_buf(),
            source,
        })
}

/// Assembles the same pipeline transformers' CLIP converter writes into a tokenizer.json.
fn build_from_vocab_and_merges(
    dir: &Path,
    vocab_path: &Path,
    merges_path: &Path,
) -> Result<tokenizers::Tokenizer> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| TokenizerError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let vocab: Value =
        serde_json::from_str(&read(vocab_path)?).map_err(|source| TokenizerError::Json {
            path: vocab_path.to_path_buf(),
            source,
        })?;
    let Some(vocab_map) = vocab.as_object() else {
        return Err(TokenizerError::Build {
            dir: dir.to_path_buf(),
            message: "vocab.json must be an object mapping tokens to ids".into(),
        });
    };
    let merges_text = read(merges_path)?;
    let merges: Vec<Value> = merges_text
        .lines()
        .filter(|line| !line.starts_with("#version"))
        .filter(|line| !line.trim().is_empty())
        .take(MAX_MERGES)
        .map(|line| Value::String(line.to_string()))
        .collect();
    let added_tokens: Vec<Value> = [DEFAULT_BOS, DEFAULT_EOS]
        .into_iter()
        .filter_map(|token| {
            let id = vocab_map.get(token)?.as_u64()?;
            Some(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": true, "special": true
            }))
        })
        .collect();
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_SPLIT_PATTERN}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": DEFAULT_EOS,
            "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges
        }
    });
    spec.to_string()
        .parse::<tokenizers::Tokenizer>()
        .map_err(|e| TokenizerError::Build {
            dir: dir.to_path_buf(),
            message: e.to_string(),
        })
}

/// The text clean-up the slow `CLIPTokenizer` does before BPE (`ftfy.fix_text` + double
/// `html.unescape` + whitespace clean-up; lower-casing and NFC happen in the normaliser).
/// Only the parts of ftfy that change ordinary prompts are reproduced: curly quotes, Latin
/// ligatures, full-width ASCII, control characters and HTML entities.
fn clean_text(text: &str) -> String {
    let text = unescape_html(&unescape_html(&fix_text(text)));
    text.trim().to_string()
}

fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => out.push('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => out.push('"'),
            '\u{FB00}' => out.push_str("ff"),
            '\u{FB01}' => out.push_str("fi"),
            '\u{FB02}' => out.push_str("fl"),
            '\u{FB03}' => out.push_str("ffi"),
            '\u{FB04}' => out.push_str("ffl"),
            '\u{FB05}' | '\u{FB06}' => out.push_str("st"),
            '\u{3000}' => out.push(' '),
            '\u{FF01}'..='\u{FF5E}' => out.push(char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)),
            '\r' => out.push('\n'),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Python's `html.unescape` for the entities prompts actually contain.
fn unescape_html(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        match decode_entity(rest) {
            Some((decoded, consumed)) => {
                out.push(decoded);
                rest = &rest[consumed..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes one entity at the start of `s` ("&amp;", "&#39;", "&#x27;"); returns the char and
/// the bytes consumed.
fn decode_entity(s: &str) -> Option<(char, usize)> {
    let end = s.find(';')?;
    let body = &s[1..end];
    let decoded = if let Some(num) = body.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        char::from_u32(code)?
    } else {
        match body {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "nbsp" => '\u{A0}',
            _ => return None,
        }
    };
    Some((decoded, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_entities_are_unescaped_like_python() {
        assert_eq!(
            unescape_html("a &amp; b &lt;3 &#39;x&#x27; &bogus; &"),
            "a & b <3 'x' &bogus; &"
        );
        // Double unescape, as transformers does.
        assert_eq!(clean_text("&amp;amp;"), "&");
    }

    #[test]
    fn ftfy_subset_normalises_quotes_ligatures_and_width() {
        assert_eq!(
            fix_text("\u{201C}ﬁne\u{201D} \u{2019}s ＡＢ"),
            "\"fine\" 's AB"
        );
    }
}
