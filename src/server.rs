//! [`TcpServer`]: accepts connections and serves them with a handler.

use crate::event_loop::EventLoop;
use crate::socket;
use ringmill_core::config::TcpServerConfig;
use ringmill_core::context::ServerContext;
use ringmill_core::engine;
use ringmill_core::engine::LoopShared;
use ringmill_core::engine::{Service, ServiceConfig, SocketOptions};
use ringmill_core::error::{NetworkError, Result};
use ringmill_core::handler::NetworkHandler;
use ringmill_core::layer::{Layer, LayerFactory};
use ringmill_core::metrics::ServerMetrics;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

enum State {
    /// Bound, not started: the first listener, holding the port.
    Bound(TcpListener),
    /// Listening on these loops.
    Started(Vec<Arc<LoopShared>>),
    Stopped,
}

/// A TCP server: one listening socket that every loop thread accepts from (or, with
/// [`reuse_port`](ringmill_core::config::TcpServerConfigBuilder::reuse_port), one
/// `SO_REUSEPORT` listener per loop), each connection served on the loop that accepted it.
/// The address is the server's alone unless `reuse_port` opts into sharing it: binding it
/// again, from this process or another, fails with `AddrInUse`.
///
/// A started server runs until [`stop`](Self::stop) or until its event loop stops;
/// dropping the `TcpServer` does not stop it.
pub struct TcpServer<H: NetworkHandler> {
    service: Arc<Service>,
    config: TcpServerConfig,
    local_addr: SocketAddr,
    state: Mutex<State>,
    /// Builds the layers of each accepted connection, bottom first.
    layers: Vec<LayerFactory>,
    /// The listener came from [`TcpServer::from_std`]: the other loops accept on
    /// duplicates of its descriptor.
    adopted: bool,
    _handler: PhantomData<fn() -> H>,
}

impl<H: NetworkHandler> TcpServer<H> {
    /// Checks `config` and binds the listening socket (so [`local_addr`](Self::local_addr)
    /// is known at once, even for port 0).
    ///
    /// Fails with [`NetworkError::Configuration`] on contradictory options, or with the
    /// I/O error of `bind`/`listen`.
    pub fn new(config: TcpServerConfig, handler: H) -> Result<Self> {
        config.validate().map_err(NetworkError::Configuration)?;
        let listener = socket::bind_listener(
            config.address,
            config.backlog,
            config.only_v6,
            config.reuse_port,
        )?;
        Self::serving(listener, config, handler, false)
    }

    /// Serves on a listener bound and listening already (handed over by a service manager,
    /// or set up with options ringmill does not offer). `config.address` and
    /// `config.backlog` are not used: the listener's own address and backlog stand, and
    /// [`config`](Self::config) reports the listener's address. Every loop thread accepts
    /// on the same socket (a duplicate of its descriptor), since another listener cannot
    /// join its port.
    ///
    /// Fails with [`NetworkError::Configuration`] on contradictory options, or with the
    /// I/O error of reading the listener's address or making it non-blocking.
    ///
    /// A real echo round trip, on a listener bound to port 0:
    ///
    /// ```
    /// use ringmill::errors::Result;
    /// use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig};
    /// use ringmill::EventLoop;
    /// use std::io::{Read, Write};
    ///
    /// struct Echo;
    ///
    /// impl NetworkHandler for Echo {
    ///     fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
    ///         ctx.send_to(conn, data)
    ///     }
    /// }
    ///
    /// # fn main() -> Result<()> {
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let event_loop = EventLoop::builder().threads(1).build()?;
    /// let server = TcpServer::from_std(listener, TcpServerConfig::default(), Echo)?;
    /// server.start(&event_loop)?;
    ///
    /// let mut peer = std::net::TcpStream::connect(server.local_addr()?)?;
    /// peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    /// peer.write_all(b"ping")?;
    /// let mut echo = [0u8; 4];
    /// peer.read_exact(&mut echo)?;
    /// assert_eq!(&echo, b"ping");
    /// event_loop.stop();
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_std(
        listener: TcpListener,
        mut config: TcpServerConfig,
        handler: H,
    ) -> Result<Self> {
        config.validate().map_err(NetworkError::Configuration)?;
        listener.set_nonblocking(true)?;
        config.address = listener.local_addr()?;
        Self::serving(listener, config, handler, true)
    }

    /// A server on `listener` (bound and listening); `adopted` for a listener from
    /// [`from_std`](Self::from_std), whose port no other listener can join.
    fn serving(
        listener: TcpListener,
        config: TcpServerConfig,
        handler: H,
        adopted: bool,
    ) -> Result<Self> {
        let local_addr = listener.local_addr()?;
        let service = Service::new(
            Arc::new(handler),
            ServiceConfig {
                marks: config.watermarks(),
                chunk: config.buffer_size,
                max_connections: config.max_connections,
                idle_timeout: config.idle_timeout,
                handshake_timeout: config.handshake_timeout,
                socket: SocketOptions {
                    no_delay: config.no_delay,
                    keep_alive: config.keep_alive,
                },
                admission: config.admission.clone(),
            },
            config.max_connections.unwrap_or(4096),
        );
        Ok(Self {
            service,
            config,
            local_addr,
            state: Mutex::new(State::Bound(listener)),
            layers: Vec::new(),
            adopted,
            _handler: PhantomData,
        })
    }

    /// Adds a [`Layer`] above any added before, built by `factory` for each accepted
    /// connection. `on_connect` then fires once every layer of the connection is ready
    /// (its handshake done); see [`crate::layer`].
    ///
    /// ```no_run
    /// use ringmill::layer::LineDelimited;
    /// use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig};
    /// use ringmill::errors::Result;
    /// use ringmill::EventLoop;
    ///
    /// /// Answers every line with its length.
    /// struct Lengths;
    ///
    /// impl NetworkHandler for Lengths {
    ///     fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, line: &[u8]) -> Result<()> {
    ///         ctx.send_to(conn, line.len().to_string().as_bytes())
    ///     }
    /// }
    ///
    /// # fn main() -> Result<()> {
    /// let config = TcpServerConfig::builder().address("127.0.0.1:0".parse()?).build();
    /// let event_loop = EventLoop::builder().threads(1).build()?;
    /// let server = TcpServer::new(config, Lengths)?
    ///     .with_layer(|| Box::new(LineDelimited::new(4096)));
    /// server.start(&event_loop)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_layer<F>(mut self, factory: F) -> Self
    where
        F: Fn() -> Box<dyn Layer> + Send + Sync + 'static,
    {
        self.layers.push(std::sync::Arc::new(factory));
        self
    }

    /// Starts accepting on every thread of `event_loop`.
    ///
    /// Fails with [`NetworkError::InvalidState`] if the server was already started or
    /// stopped.
    pub fn start(&self, event_loop: &EventLoop) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let first = match std::mem::replace(&mut *state, State::Stopped) {
            State::Bound(listener) => listener,
            other => {
                let what = match other {
                    State::Started(_) => "server already started",
                    _ => "server was stopped",
                };
                *state = other;
                return Err(Box::new(NetworkError::InvalidState(what)));
            }
        };
        self.service.set_layers(self.layers.clone());
        let loops = event_loop.loops();
        let mut listeners = Vec::with_capacity(loops.len());
        for _ in 1..loops.len() {
            if !self.adopted && self.config.reuse_port && socket::SHARED_PORT {
                listeners.push(socket::bind_listener(
                    self.local_addr,
                    self.config.backlog,
                    self.config.only_v6,
                    true,
                )?);
            } else if cfg!(unix) {
                // The same listening socket, through a descriptor of the loop's own: every
                // loop accepts from one queue, and the address stays the server's alone.
                listeners.push(first.try_clone()?);
            }
        }
        listeners.insert(0, first);
        let mut started = Vec::with_capacity(listeners.len());
        for (shared, listener) in loops.iter().zip(listeners) {
            if let Err(e) = engine::listen(shared, &self.service, listener) {
                engine::stop_service(&started, &self.service);
                return Err(Box::new(NetworkError::Io(e.into())));
            }
            started.push(Arc::clone(shared));
        }
        *state = State::Started(started);
        drop(state);
        engine::notify_listening(&self.service, self.local_addr);
        Ok(())
    }

    /// Stops accepting, closes the listening sockets, and closes every connection (after
    /// writing what is queued, up to the loop's close linger, without waiting for peers),
    /// firing `on_disconnect` for each. Later calls do nothing.
    ///
    /// Called from a thread that runs no event loop, it returns once every connection of
    /// the server is closed and its `on_disconnect` has returned: `connection_count()` is
    /// then 0. Called on a loop thread (inside a callback) it cannot wait, since that loop
    /// delivers some of those disconnects itself: the server then stops accepting at once
    /// on that loop, and the closes and `on_disconnect`s follow once the callback returns.
    pub fn stop(&self) -> Result<()> {
        let previous = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *state, State::Stopped)
        };
        // Waited on without the lock: a callback of this server may call `stop` (or
        // `start`) while the loops close its connections, and must not block on it.
        if let State::Started(loops) = previous {
            engine::stop_service(&loops, &self.service);
        }
        Ok(())
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.local_addr)
    }

    /// Connections open now. A closing connection counts until its `on_disconnect` has
    /// returned (inside that `on_disconnect` it no longer does), so 0 means every
    /// `on_disconnect` is over.
    pub fn connection_count(&self) -> usize {
        self.service.connection_count()
    }

    /// A context for acting on this server's connections from outside a callback
    /// (broadcasting from a timer thread, for example).
    pub fn context(&self) -> ServerContext {
        engine::context(&self.service)
    }

    /// A snapshot of the server's counters: connections open, accepted and refused (by
    /// reason), bytes in and out, frames refused for backpressure, handler errors and
    /// panics, idle timeouts. Kept as striped relaxed atomics (no lock, no allocation per
    /// event); reading sums the stripes.
    pub fn metrics(&self) -> ServerMetrics {
        self.service.metrics()
    }

    /// The configuration the server was built with.
    pub fn config(&self) -> &TcpServerConfig {
        &self.config
    }
}

impl<H: NetworkHandler> std::fmt::Debug for TcpServer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpServer")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.connection_count())
            .finish()
    }
}
