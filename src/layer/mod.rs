//! Layers: byte transforms between the socket and the handler, and the ones ringmill
//! ships.
//!
//! A connection can have a stack of [`Layer`]s, bottom (next to the socket) first. A
//! server builds one stack per accepted connection
//! ([`TcpServer::with_layer`](crate::tcp::TcpServer::with_layer)); a client gets its
//! layers before it starts ([`TcpClient::with_layer`](crate::tcp::TcpClient::with_layer)).
//!
//! - `on_connect` fires only once every layer is ready (its handshake done); a client's
//!   connect timeout covers the handshakes too.
//! - Frames sent before that are held whole, then encoded in order.
//! - Inbound bytes go up through every layer; a framing layer makes `on_data` get one whole
//!   frame per call.
//! - A layer's error closes the connection (what came before it is still delivered and
//!   written) and is reported through `on_error`; see [`Layer`] for which error.
//!
//! The contract, and the [`Layer`] trait (mill-net 4.0's, so a layer written for mill-net
//! works here by renaming the crate), come from the core and are described in full at
//! [`ringmill_core::layer`]. Connections without layers pay nothing for any of this.
//!
//! Layers shipped here:
//!
//! | layer | does |
//! |---|---|
//! | [`LengthPrefixed`] | frames as a `u32` big-endian length and the bytes, with a cap |
//! | [`LineDelimited`] | frames as `\n`-terminated lines, with a cap |
//! | [`Socks5`] | connects a client through a SOCKS5 proxy (no auth, or username/password) |
//! | `tls::TlsServer`, `tls::TlsClient` | TLS over rustls (the `tls` cargo feature) |
//!
//! ```no_run
//! use ringmill::layer::LengthPrefixed;
//! use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig};
//! use ringmill::errors::Result;
//! use ringmill::EventLoop;
//!
//! /// Answers each request frame with one reply frame.
//! struct Rpc;
//!
//! impl NetworkHandler for Rpc {
//!     fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, request: &[u8]) -> Result<()> {
//!         // `request` is one whole frame, however TCP split it.
//!         ctx.send_to(conn, &request.iter().rev().copied().collect::<Vec<u8>>())
//!     }
//! }
//!
//! # fn main() -> Result<()> {
//! const MAX: usize = 10 << 20;
//! let config = TcpServerConfig::builder()
//!     .address("127.0.0.1:7000".parse()?)
//!     .high_watermark(4 * MAX)
//!     .max_frame(MAX) // larger replies are refused at send time
//!     .build();
//! let event_loop = EventLoop::builder().build()?;
//! let server = TcpServer::new(config, Rpc)?.with_layer(|| Box::new(LengthPrefixed::new(MAX)));
//! server.start(&event_loop)?;
//! event_loop.run()?;
//! # Ok(())
//! # }
//! ```

mod codec;
mod socks5;
#[cfg(feature = "tls")]
pub mod tls;

pub use codec::{FrameTooLarge, LengthPrefixed, LineDelimited};
pub use ringmill_core::layer::{Frames, Layer, LayerFactory, Piece};
pub use socks5::{Socks5, Socks5Error, Socks5Target};
