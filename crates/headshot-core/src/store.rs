//! Persistence traits (`OutputStore`, `JobStore`); implemented in `headshot-store`.
