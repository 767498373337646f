//! safety_checker
