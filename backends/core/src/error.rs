//! The error types of the public API.

use crate::admission::Refusal;
use crate::id::ConnectionId;
use std::fmt;
use std::io;
use std::net::SocketAddr;

/// The result type of every fallible API call and handler callback.
///
/// The error is boxed so that `?` works on [`io::Error`], [`NetworkError`], [`SendError`]
/// and a handler's own error types alike.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Why a send did not queue a frame. The frame was refused whole: nothing of it was queued.
#[non_exhaustive]
#[derive(Debug)]
pub enum SendError {
    /// The queue is at or above its high watermark.
    /// [`on_drained`](crate::NetworkHandler::on_drained) fires once it falls to the low
    /// watermark.
    Backpressure,
    /// The connection is closed or closing, failed to connect, or its loop has stopped.
    Closed,
    /// The frame is larger than the configured `max_frame`.
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The configured cap.
        max: usize,
    },
    /// Writing failed; the connection has been closed.
    Io(io::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Backpressure => write!(f, "send queue is at or above its high watermark"),
            SendError::Closed => write!(f, "connection is closed"),
            SendError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte cap")
            }
            SendError::Io(e) => write!(f, "write failed: {e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A configuration that cannot work: found before anything was started, or (`Rejected`)
/// when the system or the object's state refused it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The low watermark is above the high watermark.
    WatermarksInverted {
        /// The low watermark.
        low: usize,
        /// The high watermark.
        high: usize,
    },
    /// A size or count that must be positive is zero.
    Zero(&'static str),
    /// `max_frame` is above the high watermark, so such a frame could never be queued
    /// without breaking the memory bound.
    MaxFrameAboveHighWatermark {
        /// The cap.
        max_frame: usize,
        /// The high watermark.
        high: usize,
    },
    /// A setting made too late: after `start` or the first send (for example a layer
    /// added then, which would have missed what went before).
    TooLate(&'static str),
    /// A value is outside what the platform or the library supports.
    OutOfRange {
        /// Which option.
        option: &'static str,
        /// Why.
        reason: String,
    },
    /// An option or call was refused where it was applied: a socket option the system
    /// rejected on one connection, or a layer added to a client already started.
    Rejected {
        /// Which option or call.
        option: &'static str,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::WatermarksInverted { low, high } => write!(
                f,
                "low watermark ({low} bytes) is above the high watermark ({high} bytes)"
            ),
            ConfigError::Zero(what) => write!(f, "{what} must be greater than zero"),
            ConfigError::MaxFrameAboveHighWatermark { max_frame, high } => write!(
                f,
                "max_frame ({max_frame} bytes) is above the high watermark ({high} bytes)"
            ),
            ConfigError::OutOfRange { option, reason }
            | ConfigError::Rejected { option, reason } => {
                write!(f, "{option}: {reason}")
            }
            ConfigError::TooLate(what) => {
                write!(f, "{what} must come before start() and the first send")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Which backend an event loop runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring where the kernel allows it, mio otherwise (the default).
    Auto,
    /// io_uring; building the event loop fails if the kernel does not allow it.
    Uring,
    /// mio: epoll on Linux, kqueue on the BSDs and macOS, AFD on Windows.
    Mio,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Uring => "io_uring",
            Backend::Mio => "mio",
        })
    }
}

/// Every error the library reports, to callers and to
/// [`on_error`](crate::NetworkHandler::on_error).
#[non_exhaustive]
#[derive(Debug)]
pub enum NetworkError {
    /// An I/O error on a connection or socket: an [`io::Error`] (downcast it, or use
    /// [`io_error`](Self::io_error)), or a layer's own error type.
    Io(Box<dyn std::error::Error + Send + Sync>),
    /// Accepting a connection failed (an [`io::Error`]).
    Accept(Box<dyn std::error::Error + Send + Sync>),
    /// An outbound connect failed; a connect timeout is an [`io::Error`] of kind
    /// [`io::ErrorKind::TimedOut`].
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// A lock was poisoned by a panicking thread.
    PoisonedLock(String),
    /// A connection was refused because `max_connections` connections are open.
    MaxConnectionsReached(SocketAddr),
    /// A connection was refused by the admission rules (per-IP cap, accept rate).
    AdmissionRefused {
        /// The refused peer.
        peer: SocketAddr,
        /// Which rule refused it.
        reason: Refusal,
    },
    /// The configuration cannot work.
    Configuration(ConfigError),
    /// A handler callback returned an error; the connection was closed.
    HandlerError(String),
    /// A handler callback panicked; the connection was closed and the loop goes on.
    HandlerPanic(String),
    /// The connection sent nothing for longer than the idle timeout and was closed.
    IdleTimeout(ConnectionId),
    /// The event loop has stopped.
    EventLoopGone,
    /// No open connection has this id (it was closed, or never existed).
    ConnectionNotFound(ConnectionId),
    /// A send was refused.
    Send(SendError),
    /// The requested backend cannot run here.
    BackendUnavailable {
        /// The backend asked for.
        backend: Backend,
        /// Why it cannot run.
        reason: String,
    },
    /// The server or client is in a state where this call cannot work (for example,
    /// started twice, or started after `stop`).
    InvalidState(&'static str),
    /// Any other error, described.
    Other(String),
}

impl NetworkError {
    /// The [`io::Error`] inside `Io`, `Accept` or `Connect`, if that is what it holds.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            NetworkError::Io(e) | NetworkError::Accept(e) | NetworkError::Connect(e) => {
                e.downcast_ref::<io::Error>()
            }
            _ => None,
        }
    }
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkError::Io(e) => write!(f, "I/O error: {e}"),
            NetworkError::Accept(e) => write!(f, "accept failed: {e}"),
            NetworkError::Connect(e) => write!(f, "connect failed: {e}"),
            NetworkError::MaxConnectionsReached(addr) => {
                write!(f, "max connections reached, rejecting {addr}")
            }
            NetworkError::AdmissionRefused { peer, reason } => {
                write!(f, "refused {peer}: {reason}")
            }
            NetworkError::Configuration(e) => write!(f, "invalid configuration: {e}"),
            NetworkError::HandlerError(msg) => write!(f, "handler error: {msg}"),
            NetworkError::HandlerPanic(msg) => write!(f, "handler panicked: {msg}"),
            NetworkError::IdleTimeout(id) => write!(f, "{id} idle for too long"),
            NetworkError::EventLoopGone => write!(f, "event loop is gone"),
            NetworkError::ConnectionNotFound(id) => write!(f, "connection not found: {id}"),
            NetworkError::Send(e) => write!(f, "send refused: {e}"),
            NetworkError::BackendUnavailable { backend, reason } => {
                write!(f, "backend {backend} unavailable: {reason}")
            }
            NetworkError::InvalidState(what) => write!(f, "invalid state: {what}"),
            NetworkError::PoisonedLock(what) => write!(f, "lock poisoned: {what}"),
            NetworkError::Other(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for NetworkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetworkError::Io(e) | NetworkError::Accept(e) | NetworkError::Connect(e) => {
                Some(e.as_ref())
            }
            NetworkError::Configuration(e) => Some(e),
            NetworkError::Send(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for NetworkError {
    fn from(err: io::Error) -> Self {
        NetworkError::Io(Box::new(err))
    }
}

impl From<SendError> for NetworkError {
    fn from(err: SendError) -> Self {
        NetworkError::Send(err)
    }
}

impl From<ConfigError> for NetworkError {
    fn from(err: ConfigError) -> Self {
        NetworkError::Configuration(err)
    }
}

/// A non-error event, reported to [`on_event`](crate::NetworkHandler::on_event).
///
/// Exhaustive, as mill-net's is, so that code matching its three variants without a
/// wildcard compiles; events of ringmill's own go elsewhere, not into new variants.
#[derive(Debug, Clone)]
pub enum NetworkEvent {
    /// A connection was accepted or established.
    ConnectionEstablished(ConnectionId, SocketAddr),
    /// A connection closed (reported after its `on_disconnect`).
    ConnectionClosed(ConnectionId),
    /// A server started listening.
    Listening(SocketAddr),
}
