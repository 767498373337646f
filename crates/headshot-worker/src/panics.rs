//! Turning a caught panic into the job's error.

use std::any::Any;

use headshot_core::GenerationError;

pub(crate) fn panicked(payload: &(dyn Any + Send)) -> GenerationError {
    let message = panic_message(payload);
    tracing::error!(%message, "a model call panicked; the job failed and the worker goes on");
    GenerationError::internal(format!("the generator panicked: {message}"))
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}
