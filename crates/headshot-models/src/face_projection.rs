//! face_projection
