//! headshot-face
