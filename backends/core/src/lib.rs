//! ringmill-core: everything both backends share.
//!
//! The event loop logic ([`runtime`]), generic over the [`Driver`](driver::Driver) trait;
//! the connection state machine and write queue; the lock-free connection map
//! ([`map`]); the receive buffer pool ([`pool`]); configuration, errors and the public
//! callback API. No OS-specific code lives here: drivers hold all of it.
#![warn(missing_docs)]

pub mod admission;
pub mod config;
mod conn;
pub mod context;
pub mod driver;
pub mod error;
pub mod handler;
pub mod id;
pub mod inbox;
pub mod layer;
pub mod loop_handle;
pub mod map;
pub mod metrics;
pub mod pool;
pub mod runtime;
pub mod service;

pub use config::{DriverConfig, TcpClientConfig, TcpServerConfig, TcpServerConfigBuilder};
pub use context::{ConnSender, ServerContext};
pub use error::{Backend, ConfigError, NetworkError, NetworkEvent, Result, SendError};
pub use handler::NetworkHandler;
pub use id::ConnectionId;
pub use layer::{Frames, Layer, Piece};
pub use loop_handle::{LoopHandle, TimerId};
pub use metrics::{LoopMetrics, ServerMetrics};
