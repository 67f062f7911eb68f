//! [`TcpClient`]: one outbound connection served with a handler.

use crate::event_loop::EventLoop;
use crate::socket;
use ringmill_core::config::TcpClientConfig;
use ringmill_core::context::ConnSender;
use ringmill_core::engine::ClientConn;
use ringmill_core::error::{NetworkError, Result, SendError};
use ringmill_core::handler::NetworkHandler;
use ringmill_core::id::ConnectionId;
use ringmill_core::layer::Layer;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

/// A TCP client: one outbound connection, served on one loop thread.
///
/// `on_connect` fires once the handshake completes; frames sent before that are queued
/// and written then. A refused or timed-out connect is reported through
/// `on_error(Some(id), NetworkError::Connect(..))`, without `on_connect` or
/// `on_disconnect`. Dropping the client closes the connection, as
/// [`disconnect`](Self::disconnect) does (and, like it, has run `on_disconnect` when it
/// returns, unless dropped on a loop thread): keep it for as long as the connection
/// should live.
#[must_use = "dropping a TcpClient closes its connection"]
pub struct TcpClient<H: NetworkHandler> {
    conn: ClientConn,
    _handler: PhantomData<fn() -> H>,
}

impl<H: NetworkHandler> TcpClient<H> {
    /// Prepares a connection to `addr`; the handshake starts with [`start`](Self::start).
    ///
    /// Fails on an invalid `config` or if the socket cannot be created.
    pub fn connect(addr: SocketAddr, config: TcpClientConfig, handler: H) -> Result<Self> {
        config.validate().map_err(NetworkError::Configuration)?;
        let (socket, refused) = socket::client_socket(addr, &config)?;
        let conn = ClientConn::new(addr, config, socket, std::sync::Arc::new(handler));
        conn.report_on_start(refused);
        Ok(Self {
            conn,
            _handler: PhantomData,
        })
    }

    /// Prepares a connection to `addr`, given as anything [`ToSocketAddrs`] takes
    /// (`"localhost:7000"`, `("example.org", 7000)`, a `SocketAddr`). The name is resolved
    /// here, on the calling thread, with the system resolver (which may block); the client
    /// connects to the first address it returns. To choose among the addresses (IPv4
    /// first, say), resolve them yourself and use [`connect`](Self::connect).
    ///
    /// Fails with the resolver's error, with [`io::ErrorKind::NotFound`] if the name has no
    /// address, or as [`connect`](Self::connect) does.
    ///
    /// [`io::ErrorKind::NotFound`]: std::io::ErrorKind::NotFound
    pub fn connect_to(
        addr: impl ToSocketAddrs,
        config: TcpClientConfig,
        handler: H,
    ) -> Result<Self> {
        let first = addr.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name resolved to no address",
            )
        })?;
        Self::connect(first, config, handler)
    }

    /// Serves a [`TcpStream`] that is connected already (made by other code, or inherited).
    /// [`start`](Self::start) then registers it and `on_connect` fires at once (after the
    /// handshakes of any layers, which the connect timeout covers). The client's socket
    /// options (`nodelay`, `keep_alive`) are applied to it.
    ///
    /// Fails on an invalid `config`, on a stream that is not connected
    /// (`NotConnected`), or if it cannot be made non-blocking.
    pub fn from_std(stream: TcpStream, config: TcpClientConfig, handler: H) -> Result<Self> {
        config.validate().map_err(NetworkError::Configuration)?;
        let addr = stream.peer_addr()?;
        let (socket, refused) = socket::adopt_client_stream(stream, &config)?;
        let conn = ClientConn::new(addr, config, socket, std::sync::Arc::new(handler));
        conn.report_on_start(refused);
        Ok(Self {
            conn,
            _handler: PhantomData,
        })
    }

    /// Adds a [`Layer`] above any added before (a SOCKS5 handshake, TLS, framing). The
    /// connect timeout then covers every layer's handshake too, and `on_connect` fires once
    /// all are done; see [`crate::layer`].
    ///
    /// Fails with [`NetworkError::Configuration`] (`ConfigError::TooLate`) after
    /// [`start`](Self::start) or the first send, which the new layer would have missed
    /// (the client is then dropped, which closes it).
    ///
    /// ```no_run
    /// use ringmill::layer::{LengthPrefixed, Socks5};
    /// use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpClient, TcpClientConfig};
    /// use ringmill::errors::Result;
    /// use ringmill::EventLoop;
    ///
    /// struct Print;
    ///
    /// impl NetworkHandler for Print {
    ///     fn on_data(&self, _: &ServerContext, _: ConnectionId, frame: &[u8]) -> Result<()> {
    ///         println!("{}", String::from_utf8_lossy(frame));
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # fn main() -> Result<()> {
    /// let event_loop = EventLoop::builder().threads(1).build()?;
    /// // Through the SOCKS5 proxy on 127.0.0.1:1080 to example.org:7000, in u32-prefixed frames.
    /// let mut client = TcpClient::connect("127.0.0.1:1080".parse()?, TcpClientConfig::default(), Print)?
    ///     .with_layer(Socks5::to_host("example.org", 7000))?
    ///     .with_layer(LengthPrefixed::new(1 << 20))?;
    /// client.send(b"ping")?; // held until both handshakes are done
    /// client.start(&event_loop)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_layer<L: Layer>(self, layer: L) -> Result<Self> {
        self.conn.add_layer(Box::new(layer))?;
        Ok(self)
    }

    /// Starts the handshake on one of `event_loop`'s threads, with the connect timeout.
    ///
    /// Fails with [`NetworkError::InvalidState`] if already started or disconnected.
    pub fn start(&mut self, event_loop: &EventLoop) -> Result<()> {
        self.conn.start(event_loop.next_loop())
    }

    /// The id handlers see for this connection.
    pub fn id(&self) -> ConnectionId {
        self.conn.id()
    }

    /// A sender for this connection, usable from any thread.
    pub fn sender(&self) -> ConnSender {
        self.conn.sender()
    }

    /// Same as `self.sender().send(data)`.
    pub fn send(&self, data: &[u8]) -> std::result::Result<(), SendError> {
        self.conn.sender().send(data)
    }

    /// Closes the connection now; same as `self.sender().close()`: what the socket takes
    /// at once of what is queued is written, the rest dropped.
    ///
    /// Called from a thread that runs no event loop, it returns once `on_disconnect` has
    /// run (when `on_connect` had). Called on a loop thread (inside a callback) it cannot
    /// wait, since that loop may be the one that must run it: `on_disconnect` follows.
    /// To write everything queued first, use `self.sender().close_gracefully()`.
    pub fn disconnect(&self) -> Result<()> {
        self.conn.sender().close();
        Ok(())
    }

    /// Whether the connection is open (established and not closing).
    pub fn is_connected(&self) -> bool {
        self.conn.is_connected()
    }
}

impl<H: NetworkHandler> Drop for TcpClient<H> {
    fn drop(&mut self) {
        self.conn.sender().close();
    }
}

impl<H: NetworkHandler> std::fmt::Debug for TcpClient<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpClient").field("id", &self.id()).finish()
    }
}
