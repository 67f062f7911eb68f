//! A service: one server's (or one client's) shared state, seen by every loop it runs on.

use crate::admission::{Admission, AdmissionConfig, Refusal, Ticket};
use crate::config::Watermarks;
use crate::conn::ConnShared;
use crate::context::{ServerContext, ServiceApi};
use crate::error::NetworkError;
use crate::handler::NetworkHandler;
use crate::id::ConnectionId;
use crate::layer::LayerFactory;
use crate::map::ConnMap;
use crate::metrics::{ServiceStats, Stat};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use crate::metrics::ServerMetrics;

thread_local! {
    /// The service (its [`Service::identity`]) whose `on_disconnect` runs on this thread
    /// now; 0 for none.
    static DISCONNECTING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

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
    /// Close accepted connections whose layer handshake is not done by then.
    pub handshake_timeout: Option<Duration>,
    /// Applied to accepted sockets.
    pub socket: SocketOptions,
    /// Per-IP caps and accept rates.
    pub admission: AdmissionConfig,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) refused_max_connections: AtomicU64,
    pub(crate) refused_per_ip: AtomicU64,
    pub(crate) refused_rate: AtomicU64,
    pub(crate) refused_ip_rate: AtomicU64,
}

impl Counters {
    pub(crate) fn refused(&self, why: Option<Refusal>) {
        let counter = match why {
            None => &self.refused_max_connections,
            Some(Refusal::PerIpLimit) => &self.refused_per_ip,
            Some(Refusal::RateLimited) => &self.refused_rate,
            Some(Refusal::PerIpRateLimited) => &self.refused_ip_rate,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One server's or client's shared state: its handler, its connections, its counters.
pub struct Service {
    pub(crate) handler: Arc<dyn NetworkHandler>,
    pub(crate) conns: ConnMap<ConnShared>,
    pub(crate) config: ServiceConfig,
    /// Connections open now (admitted, and not closed with its `on_disconnect` returned).
    pub(crate) count: AtomicUsize,
    /// Places taken under `max_connections`. Like `count`, but a place is given back only
    /// once the connection's `on_disconnect` has returned, so that a replacement admitted
    /// by another loop never overlaps the callbacks of the connection it replaces.
    pub(crate) places: AtomicUsize,
    pub(crate) stopped: AtomicBool,
    pub(crate) admission: Admission,
    pub(crate) counters: Counters,
    /// Traffic and failure counters, shared with the service's connections.
    pub(crate) stats: Arc<ServiceStats>,
    /// Builds the layers of each accepted connection, bottom first (set once, before the
    /// service starts; unset for a service without layers).
    layers: OnceLock<Vec<LayerFactory>>,
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
            admission: Admission::new(config.admission.clone()),
            counters: Counters::default(),
            stats: Arc::default(),
            config,
            count: AtomicUsize::new(0),
            places: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            layers: OnceLock::new(),
        })
    }

    /// Sets the layer factories of the service's accepted connections, bottom first.
    /// Only the first call with a non-empty list takes effect (`false` for later ones);
    /// call it before the service accepts.
    pub fn set_layers(&self, factories: Vec<LayerFactory>) -> bool {
        if factories.is_empty() {
            return self.layers.get().is_none();
        }
        self.layers.set(factories).is_ok()
    }

    /// The layer factories, if the service has layers.
    pub(crate) fn layer_factories(&self) -> Option<&[LayerFactory]> {
        self.layers.get().map(Vec::as_slice)
    }

    /// Connections open now. A closing connection counts until its `on_disconnect` has
    /// returned, so a count of 0 seen from outside means every `on_disconnect` is over;
    /// inside its own `on_disconnect` it no longer counts (what remains is the others).
    pub fn connection_count(&self) -> usize {
        let own = DISCONNECTING.with(|d| d.get() == self.identity());
        self.count
            .load(Ordering::Acquire)
            .saturating_sub(usize::from(own))
    }

    /// Runs `f`, the `on_disconnect` of one of this service's connections (still counted),
    /// so that [`connection_count`](Self::connection_count) called in it on this thread
    /// leaves that connection out.
    pub(crate) fn while_disconnecting<R>(&self, f: impl FnOnce() -> R) -> R {
        /// Puts back the previous value even if `f` unwinds.
        struct Restore(usize);
        impl Drop for Restore {
            fn drop(&mut self) {
                DISCONNECTING.with(|d| d.set(self.0));
            }
        }
        let _restore = Restore(DISCONNECTING.with(|d| d.replace(self.identity())));
        f()
    }

    /// The service's address, as a number: which service a thread's `on_disconnect` is of.
    fn identity(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> ServerMetrics {
        let c = &self.counters;
        let s = &self.stats;
        ServerMetrics {
            bytes_in: s.get(Stat::BytesIn),
            bytes_out: s.get(Stat::BytesOut),
            bytes_written_through: s.get(Stat::BytesWrittenThrough),
            backpressure_refusals: s.get(Stat::Backpressure),
            handler_errors: s.get(Stat::HandlerError),
            handler_panics: s.get(Stat::HandlerPanic),
            idle_timeouts: s.get(Stat::IdleTimeout),
            open: self.connection_count(),
            accepted: c.accepted.load(Ordering::Relaxed),
            refused_max_connections: c.refused_max_connections.load(Ordering::Relaxed),
            refused_per_ip: c.refused_per_ip.load(Ordering::Relaxed),
            refused_rate: c.refused_rate.load(Ordering::Relaxed),
            refused_ip_rate: c.refused_ip_rate.load(Ordering::Relaxed),
        }
    }

    /// Counts `n` of `stat`.
    #[inline]
    pub(crate) fn count(&self, stat: Stat, n: u64) {
        self.stats.add(stat, n);
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

    /// An admitted connection closed and its `on_disconnect` (if owed) returned: it no
    /// longer counts as open. Its place under `max_connections` stays taken until
    /// [`release_place`](Self::release_place).
    pub(crate) fn release(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }

    /// The closed connection's `on_disconnect` has returned: its place is free.
    pub(crate) fn release_place(&self, ticket: Ticket) {
        self.admission.release(ticket);
        self.places.fetch_sub(1, Ordering::AcqRel);
    }

    /// Admits a connection from `peer` accepted at `now`: a place under `max_connections`
    /// and the admission rules; the error says why not (and is counted).
    pub(crate) fn admit(&self, peer: SocketAddr, now: Instant) -> Result<Ticket, NetworkError> {
        if !self.try_admit() {
            self.counters.refused(None);
            return Err(NetworkError::MaxConnectionsReached(peer));
        }
        match self.admission.admit(peer.ip(), now) {
            Ok(ticket) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(ticket)
            }
            Err(reason) => {
                self.release();
                self.places.fetch_sub(1, Ordering::AcqRel);
                self.counters.refused(Some(reason));
                Err(NetworkError::AdmissionRefused { peer, reason })
            }
        }
    }
}

impl Service {
    /// A context for this service's handler.
    pub fn context(self: &Arc<Self>) -> ServerContext {
        ServerContext::new(Arc::clone(self) as Arc<dyn ServiceApi>)
    }
}

impl ServiceApi for Service {
    fn conns(&self) -> &ConnMap<ConnShared> {
        &self.conns
    }

    fn connection_count(&self) -> usize {
        Service::connection_count(self)
    }

    fn report(&self, ctx: &ServerContext, conn: Option<ConnectionId>, error: NetworkError) {
        self.handler.on_error(ctx, conn, error);
    }
}
