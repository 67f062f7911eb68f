//! A service: one server's (or one client's) shared state, seen by every loop it runs on.

use crate::config::Watermarks;
use crate::conn::ConnShared;
use crate::handler::NetworkHandler;
use crate::map::ConnMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Socket options applied to every connection of a service.
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    /// `TCP_NODELAY`.
    pub no_delay: bool,
    /// `SO_KEEPALIVE` with this idle time; `None` leaves it off.
    pub keep_alive: Option<Duration>,
}

/// Everything about a service that the loops need to serve its connections.
pub struct ServiceConfig {
    /// Outbound limits of each connection.
    pub marks: Watermarks,
    /// Largest chunk one `on_data` call receives.
    pub chunk: usize,
    /// Most connections open at once.
    pub max_connections: Option<usize>,
    /// Close connections idle for this long.
    pub idle_timeout: Option<Duration>,
    /// Applied to accepted sockets.
    pub socket: SocketOptions,
}

/// One server's or client's shared state: its handler, its connections, its counters.
pub struct Service {
    pub(crate) handler: Arc<dyn NetworkHandler>,
    pub(crate) conns: ConnMap<ConnShared>,
    pub(crate) config: ServiceConfig,
    /// Connections open now (admitted, not yet closed).
    pub(crate) count: AtomicUsize,
    /// Places taken under `max_connections`. Like `count`, but a place is given back only
    /// once the connection's `on_disconnect` has returned, so that a replacement admitted
    /// by another loop never overlaps the callbacks of the connection it replaces.
    pub(crate) places: AtomicUsize,
    pub(crate) stopped: AtomicBool,
}

impl Service {
    /// A new service; `capacity` sizes its connection map.
    pub fn new(
        handler: Arc<dyn NetworkHandler>,
        config: ServiceConfig,
        capacity: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            handler,
            conns: ConnMap::with_capacity(capacity),
            config,
            count: AtomicUsize::new(0),
            places: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        })
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether `stop` was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Takes one place under `max_connections`; `false` if the service is full.
    pub(crate) fn try_admit(&self) -> bool {
        let admitted = match self.config.max_connections {
            None => {
                self.places.fetch_add(1, Ordering::AcqRel);
                true
            }
            Some(max) => self
                .places
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok(),
        };
        if admitted {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
        admitted
    }

    /// An admitted connection closed: it no longer counts as open. Its place under
    /// `max_connections` stays taken until [`release_place`](Self::release_place).
    pub(crate) fn release(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }

    /// The closed connection's `on_disconnect` has returned: its place is free.
    pub(crate) fn release_place(&self) {
        self.places.fetch_sub(1, Ordering::AcqRel);
    }
}
