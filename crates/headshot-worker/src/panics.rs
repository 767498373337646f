//! Running model calls with panics caught, and turning a caught panic into the job's error.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use headshot_core::GenerationError;

use crate::metrics_names::METRIC_GENERATOR_PANICS;

/// Runs a model call with panics caught. The panic's payload is dropped under a guard as well:
/// a payload whose own `Drop` panics would otherwise unwind through the stage thread and stop
/// it (such a payload is leaked instead).
pub(crate) fn guarded<T>(call: impl FnOnce() -> T) -> Result<T, GenerationError> {
    catch_unwind(AssertUnwindSafe(call)).map_err(|payload| {
        metrics::counter!(METRIC_GENERATOR_PANICS).increment(1);
        let error = panicked(payload.as_ref());
        if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            tracing::error!("a panic's payload panicked when dropped; leaking it");
            std::mem::forget(again);
        }
        error
    })
}

fn panicked(payload: &(dyn Any + Send)) -> GenerationError {
    let message = panic_message(payload);
    tracing::error!(%message, "a model call panicked; the job failed and the worker goes on");
    GenerationError::internal(format!("the generator panicked: {message}"))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}
