//! Panic containment for layer methods: a panicking layer becomes an error of its
//! connection (reported as [`NetworkError::HandlerPanic`](crate::NetworkError::HandlerPanic)),
//! never the death of its loop thread.

use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A layer method panicked. Carried inside the [`io::Error`] the stack returns, so the
/// loop can tell a panic (abort the connection, report `HandlerPanic`) from an error.
#[derive(Debug, Clone)]
pub(crate) struct LayerPanic {
    method: &'static str,
    message: String,
}

impl fmt::Display for LayerPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer panicked in `{}`: {}", self.method, self.message)
    }
}

impl std::error::Error for LayerPanic {}

impl LayerPanic {
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

/// Runs one layer method, turning a panic into a [`LayerPanic`].
pub(crate) fn call<T>(method: &'static str, f: impl FnOnce() -> T) -> Result<T, LayerPanic> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| LayerPanic {
        method,
        message: crate::runtime::panic_message(payload.as_ref()),
    })
}

/// The panic an error of the stack stands for, if it stands for one.
pub(crate) fn panic_of(e: &io::Error) -> Option<&LayerPanic> {
    e.get_ref()?.downcast_ref::<LayerPanic>()
}
