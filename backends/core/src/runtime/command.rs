//! The runtime's commands: the work other threads (and the loop's own callbacks) mail to a
//! loop (`inbox.rs`), carried out in `dispatch.rs`.

use super::timer::UserTimer;
use crate::conn::{CloseMode, ConnShared};
use crate::error::NetworkError;
use crate::layer::Layer;
use crate::service::Service;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Work for a loop.
pub(crate) enum Command {
    /// The connection has queued bytes to write.
    Flush(Arc<ConnShared>),
    /// Close the connection.
    Close(Arc<ConnShared>, CloseMode),
    /// Stop delivering the connection's bytes.
    Pause(Arc<ConnShared>),
    /// Deliver the connection's bytes again.
    Resume(Arc<ConnShared>),
    /// Accept connections for a service on this listener.
    Listen {
        service: Arc<Service>,
        listener: TcpListener,
        ack: mpsc::SyncSender<std::io::Result<()>>,
    },
    /// Stop a service on this loop: stop its listeners, close its connections.
    StopService {
        service: Arc<Service>,
        ack: mpsc::SyncSender<()>,
    },
    /// Connect a client.
    Connect {
        service: Arc<Service>,
        conn: Arc<ConnShared>,
        socket: socket2::Socket,
        addr: SocketAddr,
        timeout: Duration,
        /// The client's layers, bottom first (empty: none).
        layers: Vec<Box<dyn Layer>>,
        /// Socket options the system refused, reported to `on_error` with the id.
        refused: Vec<NetworkError>,
    },
    /// Run a closure on the loop.
    Post(Box<dyn FnOnce() + Send>),
    /// Add a user timer to the loop's heap.
    Timer(UserTimer),
    /// Stop the loop: close everything, then exit.
    Stop,
}
