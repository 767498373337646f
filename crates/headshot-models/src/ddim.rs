//! ddim
