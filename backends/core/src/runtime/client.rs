//! A client connection before and after it is handed to its loop: its layers and socket
//! options gathered before the start, and the `Connect` command that starts it.

use super::command::Command;
use super::shared::LoopShared;
use crate::admission::AdmissionConfig;
use crate::config::TcpClientConfig;
use crate::conn::ConnShared;
use crate::context::ConnSender;
use crate::error::{ConfigError, NetworkError, Result};
use crate::handler::NetworkHandler;
use crate::id::ConnectionId;
use crate::layer::Layer;
use crate::service::{Service, ServiceConfig, SocketOptions};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A client connection before and after it is handed to a loop.
pub struct ClientConn {
    service: Arc<Service>,
    conn: Arc<ConnShared>,
    pending: Mutex<Option<(socket2::Socket, SocketAddr, Duration)>>,
    /// Layers added before the start, bottom first.
    layers: Mutex<Vec<Box<dyn Layer>>>,
    /// Errors for the handler's `on_error` once the client starts (socket options the
    /// system refused).
    refused: Mutex<Vec<NetworkError>>,
}

impl ClientConn {
    /// A client connection to `addr` over `socket` (unconnected), served by `handler`.
    pub fn new(
        addr: SocketAddr,
        config: TcpClientConfig,
        socket: socket2::Socket,
        handler: Arc<dyn NetworkHandler>,
    ) -> Self {
        let marks = config.watermarks();
        let service = Service::new(
            handler,
            ServiceConfig {
                marks,
                chunk: config.buffer_size,
                max_connections: None,
                idle_timeout: config.idle_timeout,
                // The connect timeout covers a client's handshake.
                handshake_timeout: None,
                socket: SocketOptions {
                    no_delay: config.nodelay,
                    keep_alive: config.keep_alive,
                },
                admission: AdmissionConfig::default(),
            },
            1,
        );
        let conn = ConnShared::new(ConnectionId::next(), marks, Arc::clone(&service.stats));
        service.conns.insert(conn.id, Arc::clone(&conn));
        Self {
            service,
            conn,
            pending: Mutex::new(Some((socket, addr, config.connect_timeout))),
            layers: Mutex::new(Vec::new()),
            refused: Mutex::new(Vec::new()),
        }
    }

    /// Errors to report to the handler (`on_error` with the connection's id, on its loop)
    /// when the client starts: socket options the system refused, which the connection
    /// goes on without.
    pub fn report_on_start(&self, errors: Vec<NetworkError>) {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(errors);
    }

    /// Adds a layer above those added before.
    ///
    /// Fails with [`NetworkError::Configuration`] ([`ConfigError::TooLate`], as mill-net
    /// reports it) once the client was started or a frame was sent (that frame would have
    /// bypassed the new layer).
    pub fn add_layer(&self, layer: Box<dyn Layer>) -> Result<()> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_none() || !self.conn.set_layered() {
            return Err(Box::new(NetworkError::Configuration(ConfigError::TooLate(
                "with_layer",
            ))));
        }
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(layer);
        Ok(())
    }

    /// Starts the handshake on `shared`'s loop.
    pub fn start(&self, shared: &Arc<LoopShared>) -> Result<()> {
        let Some((socket, addr, timeout)) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Err(Box::new(NetworkError::InvalidState(
                "client already started",
            )));
        };
        if self.conn.is_closed() {
            return Err(Box::new(NetworkError::InvalidState(
                "client was disconnected",
            )));
        }
        if !shared.push(Command::Connect {
            service: Arc::clone(&self.service),
            conn: Arc::clone(&self.conn),
            socket,
            addr,
            timeout,
            layers: std::mem::take(&mut *self.layers.lock().unwrap_or_else(|e| e.into_inner())),
            refused: std::mem::take(&mut *self.refused.lock().unwrap_or_else(|e| e.into_inner())),
        }) {
            return Err(Box::new(NetworkError::EventLoopGone));
        }
        Ok(())
    }

    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.conn.id
    }

    /// A sender for the connection.
    pub fn sender(&self) -> ConnSender {
        ConnSender::new(Arc::clone(&self.conn))
    }

    /// Whether the connection is established and not closing.
    pub fn is_connected(&self) -> bool {
        self.conn.slot().is_some() && !self.conn.is_closed() && self.service.connection_count() > 0
    }
}
