//! TCP servers and clients with a lock-free connection map.
//!
//! Each connection gets a [`ConnectionId`] from a process-wide counter, so an id is never
//! reused; its shared state sits in a lock-free map, so any thread can send to it without
//! blocking the loop that owns it.
//!
//! # Configuration
//!
//! ```
//! use ringmill::tcp::config::TcpServerConfig;
//!
//! let config = TcpServerConfig::builder()
//!     .address("0.0.0.0:8080".parse().unwrap())
//!     .buffer_size(16384)              // Larger buffers for high throughput
//!     .max_connections(1000)           // Limit concurrent connections
//!     .no_delay(true)                  // Disable Nagle's algorithm
//!     .build();
//! # assert!(config.validate().is_ok());
//! ```
//!
//! # Handler implementation
//!
//! ```
//! use ringmill::tcp::{traits::{NetworkHandler, ConnectionId}, ServerContext};
//! use ringmill::errors::Result;
//!
//! struct MyHandler;
//!
//! impl NetworkHandler for MyHandler {
//!     fn on_data(&self, ctx: &ServerContext, conn_id: ConnectionId, data: &[u8]) -> Result<()> {
//!         println!("Received {} bytes from {:?}", data.len(), conn_id);
//!         ctx.send_to(conn_id, b"some response")?;
//!         Ok(())
//!     }
//! }
//! ```

pub use crate::client::TcpClient;
pub use crate::layer::{self, Layer};
pub use crate::server::TcpServer;
pub use ringmill_core::context::{ConnSender, ServerContext};
pub use ringmill_core::error::SendError;
pub use ringmill_core::metrics::ServerMetrics;

pub use config::*;
pub use traits::*;

/// Server and client configuration.
pub mod config {
    pub use ringmill_core::config::{
        TcpClientConfig, TcpServerConfig, TcpServerConfigBuilder, DEFAULT_BACKLOG,
        DEFAULT_BUFFER_SIZE, DEFAULT_HIGH_WATERMARK, DEFAULT_LOW_WATERMARK,
    };
    pub use ringmill_core::{AdmissionConfig, RateLimit, Refusal};
}

/// The handler trait and connection ids.
pub mod traits {
    pub use ringmill_core::handler::NetworkHandler;
    pub use ringmill_core::id::ConnectionId;
}
