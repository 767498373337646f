//! headshot-weights
