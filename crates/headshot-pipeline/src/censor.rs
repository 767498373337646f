//! Censoring of images the safety checker flagged.
