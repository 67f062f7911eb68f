//! Calling the user's handler: every callback runs under `catch_unwind`, so a panic closes
//! one connection instead of the loop.

use crate::error::Result;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// How a callback ended.
pub(crate) enum Outcome {
    Ok,
    /// It returned an error.
    Failed(String),
    /// It panicked.
    Panicked(String),
}

/// Calls `f`, catching a panic.
#[inline]
pub(crate) fn call(f: impl FnOnce() -> Result<()>) -> Outcome {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(payload) => Outcome::Panicked(panic_message(payload.as_ref())),
    }
}

/// Calls a callback that returns nothing (`on_error`), swallowing a panic after logging it.
pub(crate) fn call_quiet(f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        log::error!(
            "ringmill: on_error panicked: {}",
            panic_message(payload.as_ref())
        );
    }
}

/// Runs a user's closure (a timer, a posted task), catching and logging a panic.
/// Returns `false` if it panicked.
pub(crate) fn call_task(what: &str, f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => true,
        Err(payload) => {
            log::error!(
                "ringmill: {what} panicked: {}",
                panic_message(payload.as_ref())
            );
            false
        }
    }
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
