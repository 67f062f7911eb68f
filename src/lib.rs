//! ringmill: TCP servers and clients with a callback API, on io_uring where the kernel
//! allows it and on mio (epoll, kqueue, Windows) everywhere else.
//!
//! Write a [`NetworkHandler`](tcp::NetworkHandler), hand it to a
//! [`TcpServer`](tcp::TcpServer) or [`TcpClient`](tcp::TcpClient), start it on an
//! [`EventLoop`], and call `ctx.send_to(conn, bytes)` from its callbacks. The backend is
//! picked at run time (see [`EventLoop::backend`]); both backends give the same API and the
//! same observable behaviour.
//!
//! ```no_run
//! use ringmill::tcp::{ServerContext, TcpServer, TcpServerConfig};
//! use ringmill::tcp::traits::{ConnectionId, NetworkHandler};
//! use ringmill::errors::Result;
//! use ringmill::EventLoop;
//!
//! struct Echo;
//!
//! impl NetworkHandler for Echo {
//!     fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
//!         ctx.send_to(conn, data)
//!     }
//! }
//!
//! # fn main() -> Result<()> {
//! let config = TcpServerConfig::builder()
//!     .address("127.0.0.1:0".parse().unwrap())
//!     .build();
//! let event_loop = EventLoop::builder().threads(2).build()?;
//! let server = TcpServer::new(config, Echo)?;
//! server.start(&event_loop)?;
//! println!("echo on {} using {}", server.local_addr()?, event_loop.backend());
//! event_loop.run()?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod compute;
mod event_loop;
pub mod layer;
mod select;
mod server;
mod socket;

pub mod errors;
pub mod tcp;
#[cfg(feature = "testing")]
pub mod testing;

pub use compute::{ComputePoolMetrics, TaskPriority};
pub use event_loop::{EventLoop, EventLoopBuilder, MAX_THREADS};
pub use ringmill_core::driver::DriverCounters;
pub use ringmill_core::error::Backend;
pub use ringmill_core::loop_handle::{LoopHandle, TimerId};
pub use ringmill_core::metrics::{LoopMetrics, ServerMetrics};
pub use ringmill_core::DriverConfig;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
