//! ringmill-core: everything both backends share.
//!
//! The event loop logic (the `runtime` module), generic over the [`Driver`](driver::Driver)
//! trait; the connection state machine and write queue; the lock-free connection map; the
//! receive buffer pool ([`pool`]); configuration, errors and the public callback API. No
//! OS-specific code lives here: drivers hold all of it.
//!
//! # Not a public API
//!
//! Applications use the `ringmill` crate, which re-exports what they need from here.
//! This crate is the engine shared by `ringmill`, `ringmill-mio` and `ringmill-uring`,
//! which are released together in lockstep. The engine's modules (`admission`, `inbox`,
//! `map`, `runtime`, `service`) are private; the facade reaches them through one entry,
//! [`engine`]. The driver contract the drivers implement (`driver`, `slots`, `pool`,
//! `clock`, and the `conformance` suite) is public but hidden from the documentation. None
//! of these is semver surface: they may change in any release. Items re-exported by
//! `ringmill` follow `ringmill`'s version.
#![warn(missing_docs)]

mod admission;
#[doc(hidden)]
pub mod clock;
pub mod config;
#[cfg(feature = "conformance")]
#[doc(hidden)]
pub mod conformance;
mod conn;
pub mod context;
#[doc(hidden)]
pub mod driver;
#[doc(hidden)]
pub mod engine;
pub mod error;
pub mod handler;
pub mod id;
mod inbox;
pub mod layer;
pub mod loop_handle;
mod map;
pub mod metrics;
#[doc(hidden)]
pub mod pool;
mod runtime;
mod service;
#[cfg(all(feature = "sim", unix))]
#[doc(hidden)]
pub mod sim;
#[doc(hidden)]
pub mod slots;
pub mod sock;
mod write_through;

pub use admission::{AdmissionConfig, RateLimit, Refusal};
pub use config::{DriverConfig, TcpClientConfig, TcpServerConfig, TcpServerConfigBuilder};
pub use context::{ConnSender, ServerContext};
pub use error::{Backend, ConfigError, NetworkError, NetworkEvent, Result, SendError};
pub use handler::NetworkHandler;
pub use id::ConnectionId;
pub use layer::{Frames, Layer, Piece};
pub use loop_handle::{LoopHandle, TimerId};
pub use metrics::{LoopMetrics, ServerMetrics};
