//! clip_vision
