//! TLS layers over rustls: [`TlsServer`] and [`TlsClient`] (the `tls` cargo feature).
//!
//! # rustls is a public dependency
//!
//! The layers take rustls's own `ServerConfig` and `ClientConfig`, so rustls's version is
//! part of this crate's API: a release of ringmill that moves to an incompatible rustls
//! is a breaking release. The [`rustls`] crate is re-exported
//! (`ringmill::layer::tls::rustls`): build configurations with it and they are of the very
//! version the layers use.
//!
//! # Crypto provider
//!
//! ringmill enables rustls's *ring* provider. Build configurations with that provider named
//! explicitly, `builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))`,
//! as the examples below do: the shorter `builder()` uses the process-wide default
//! provider, and panics when another crate in the program has enabled a second provider
//! (`aws-lc-rs`, say) without installing a default, or uses the one another crate
//! installed.
//!
//! ```no_run
//! use ringmill::layer::tls::{rustls, TlsServer};
//! use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig};
//! use ringmill::errors::Result;
//! use ringmill::EventLoop;
//! use rustls::pki_types::pem::PemObject;
//! use rustls::pki_types::{CertificateDer, PrivateKeyDer};
//! use std::sync::Arc;
//!
//! struct Echo;
//!
//! impl NetworkHandler for Echo {
//!     fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
//!         ctx.send_to(conn, data) // plaintext in, plaintext out: the layer encrypts
//!     }
//! }
//!
//! # fn main() -> Result<()> {
//! let certs = CertificateDer::pem_file_iter("server.pem")?.collect::<std::result::Result<Vec<_>, _>>()?;
//! let key = PrivateKeyDer::from_pem_file("server.key")?;
//! let provider = Arc::new(rustls::crypto::ring::default_provider());
//! let tls = Arc::new(
//!     rustls::ServerConfig::builder_with_provider(provider)
//!         .with_safe_default_protocol_versions()?
//!         .with_no_client_auth()
//!         .with_single_cert(certs, key)?,
//! );
//! let config = TcpServerConfig::builder().address("127.0.0.1:4433".parse()?).build();
//! let event_loop = EventLoop::builder().build()?;
//! let server = TcpServer::new(config, Echo)?.with_layer(move || {
//!     Box::new(TlsServer::new(Arc::clone(&tls)).expect("a valid server config"))
//! });
//! server.start(&event_loop)?;
//! event_loop.run()?;
//! # Ok(())
//! # }
//! ```

use super::Layer;
use std::io::{self, Read, Write};
use std::sync::Arc;

pub use rustls;
use rustls::pki_types::ServerName;

/// A rustls connection driven over the layer's byte buffers.
struct Tls {
    conn: rustls::Connection,
    /// The peer's `close_notify` came.
    peer_closed: bool,
}

impl Tls {
    fn new(mut conn: rustls::Connection) -> Self {
        // Everything written is drained into the layer's output at once, so rustls need
        // not bound its buffers (the connection's watermarks bound what is queued).
        conn.set_buffer_limit(None);
        Self {
            conn,
            peer_closed: false,
        }
    }

    /// Moves every TLS record rustls has for the peer into `out`.
    fn drain(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(out)?;
        }
        Ok(())
    }

    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        let mut rest = input;
        while !rest.is_empty() {
            if self.conn.read_tls(&mut rest)? == 0 {
                // After the peer's close_notify nothing more is read; what follows is
                // ignored, as the end of the stream will come next.
                break;
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // Send the alert rustls prepared, then fail.
                    let _ = self.drain(out);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            self.peer_closed |= state.peer_has_closed();
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = up.len();
                up.resize(start + n, 0);
                self.conn.reader().read_exact(&mut up[start..])?;
            }
            self.drain(out)?;
        }
        Ok(())
    }

    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.conn.writer().write_all(frame)?;
        self.drain(out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.conn.send_close_notify();
        self.drain(out)
    }

    /// A TCP end of stream without the peer's `close_notify` may be a truncation: what
    /// the peer sent could have been cut short by someone on the path.
    fn end_of_stream(&mut self) -> io::Result<()> {
        if self.peer_closed {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "TLS peer ended the connection without close_notify (the data may be truncated)",
            ))
        }
    }

    /// A client starts with its ClientHello; a server waits for the peer's.
    fn start(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match self.conn {
            rustls::Connection::Client(_) => self.drain(out),
            rustls::Connection::Server(_) => Ok(()),
        }
    }

    fn is_ready(&self) -> bool {
        !self.conn.is_handshaking()
    }
}

/// Implements `Debug` and [`Layer`] for `$side`, a newtype over [`Tls`]: the side's
/// name with where its handshake stands, and every layer method handed to the `Tls`.
macro_rules! tls_side {
    ($side:ident) => {
        impl std::fmt::Debug for $side {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($side))
                    .field("handshaking", &self.0.conn.is_handshaking())
                    .finish()
            }
        }

        impl Layer for $side {
            fn start(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
                self.0.start(out)
            }

            fn decode(
                &mut self,
                input: &[u8],
                up: &mut Vec<u8>,
                out: &mut Vec<u8>,
            ) -> io::Result<()> {
                self.0.decode(input, up, out)
            }

            fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
                self.0.encode(frame, out)
            }

            fn is_ready(&self) -> bool {
                self.0.is_ready()
            }

            fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
                self.0.finish(out)
            }

            fn end_of_stream(&mut self) -> io::Result<()> {
                self.0.end_of_stream()
            }
        }
    };
}

/// The server side of TLS, as a [`Layer`] for [`TcpServer::with_layer`]
/// (see the [module example](self)). `on_connect` fires once the handshake is done; the
/// handler then reads and writes plaintext. A graceful close sends `close_notify`.
///
/// [`TcpServer::with_layer`]: crate::tcp::TcpServer::with_layer
pub struct TlsServer(Tls);

impl TlsServer {
    /// A server-side TLS layer with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        let conn = rustls::ServerConnection::new(config)?;
        Ok(Self(Tls::new(conn.into())))
    }
}

tls_side!(TlsServer);

/// The client side of TLS, as a [`Layer`] for [`TcpClient::with_layer`]. It verifies the
/// server's certificate for `server_name` as `config` says; `on_connect` fires once the
/// handshake is done, within the client's connect timeout.
///
/// ```no_run
/// use ringmill::layer::tls::{rustls, TlsClient};
/// use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpClient, TcpClientConfig};
/// use ringmill::errors::Result;
/// use ringmill::EventLoop;
/// use rustls::pki_types::pem::PemObject;
/// use rustls::pki_types::{CertificateDer, ServerName};
/// use std::sync::Arc;
///
/// struct Print;
///
/// impl NetworkHandler for Print {
///     fn on_data(&self, _: &ServerContext, _: ConnectionId, data: &[u8]) -> Result<()> {
///         print!("{}", String::from_utf8_lossy(data));
///         Ok(())
///     }
/// }
///
/// # fn main() -> Result<()> {
/// let mut roots = rustls::RootCertStore::empty();
/// roots.add(CertificateDer::from_pem_file("ca.pem")?)?;
/// let provider = Arc::new(rustls::crypto::ring::default_provider());
/// let tls = rustls::ClientConfig::builder_with_provider(provider)
///     .with_safe_default_protocol_versions()?
///     .with_root_certificates(roots)
///     .with_no_client_auth();
/// let name = ServerName::try_from("localhost")?;
/// let event_loop = EventLoop::builder().threads(1).build()?;
/// let mut client = TcpClient::connect("127.0.0.1:4433".parse()?, TcpClientConfig::default(), Print)?
///     .with_layer(TlsClient::new(Arc::new(tls), name)?)?;
/// client.send(b"hello\n")?; // encrypted once the handshake is done
/// client.start(&event_loop)?;
/// # Ok(())
/// # }
/// ```
///
/// [`TcpClient::with_layer`]: crate::tcp::TcpClient::with_layer
pub struct TlsClient(Tls);

impl TlsClient {
    /// A client-side TLS layer with `config`, for the server named `server_name`.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Result<Self, rustls::Error> {
        let conn = rustls::ClientConnection::new(config, server_name)?;
        Ok(Self(Tls::new(conn.into())))
    }
}

tls_side!(TlsClient);
