//! Errors: [`Result`], [`NetworkError`], [`SendError`], [`ConfigError`], and the non-error
//! [`NetworkEvent`].

pub use ringmill_core::error::{ConfigError, NetworkError, NetworkEvent, Result, SendError};
