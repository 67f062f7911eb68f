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
    /// Connections counted against `max_connections` (accepted, not yet closed).
    pub(crate) count: AtomicUsize,
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
        match self.config.max_connections {
            None => {
                self.count.fetch_add(1, Ordering::AcqRel);
                true
            }
            Some(max) => self
                .count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok(),
        }
    }

    pub(crate) fn release(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}
