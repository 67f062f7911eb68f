//! Shared harness of the conformance suite.
//!
//! Every test file starts with
//!
//! ```ignore
//! mod common;
//! use common::*;
//!
//! backend_matrix! {
//!     fn some_behaviour(backend: Backend) {
//!         let event_loop = event_loop(backend);
//!         // ...
//!     }
//! }
//! ```
//!
//! and gets one `#[test]` per backend (`some_behaviour::uring`, `some_behaviour::mio`).
//!
//! What is here:
//! - [`backend_matrix!`] and the io_uring availability check ([`require_backend`]);
//! - event loops and servers on loopback ([`event_loop`], [`event_loop_with`],
//!   [`start_server`], [`server_config`]);
//! - waiting with deadlines: [`Shared`] (a value behind a mutex and condvar), [`Recorder`]
//!   (per-connection callback traces), [`poll_until`] for what nothing can notify;
//! - handlers: [`Echo`] (echo that respects backpressure), [`Recording`] (records every
//!   callback, optional echo, optional hooks), [`Silent`];
//! - blocking loopback clients ([`connect`], [`read_exact_within`], [`read_to_eof`],
//!   [`reset_close`]), deterministic data ([`Rng`], [`pattern`], [`Fnv`]);
//! - process resources ([`fd_count`], [`thread_count`], [`raise_nofile_limit`]);
//! - [`proxy`]: a loopback fault proxy.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod proxy;

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use ringmill::errors::{ConfigError, NetworkError, NetworkEvent, Result, SendError};
pub use ringmill::tcp::{
    ConnSender, ConnectionId, NetworkHandler, ServerContext, TcpClient, TcpClientConfig, TcpServer,
    TcpServerConfig, TcpServerConfigBuilder,
};
pub use ringmill::{Backend, DriverConfig, EventLoop, EventLoopBuilder};

/// Deadline for anything a test waits for. Only reached when something is broken; tests
/// never rely on it passing.
pub const WAIT: Duration = Duration::from_secs(10);

/// Short deadline, for waits expected to finish almost at once.
pub const SHORT_WAIT: Duration = Duration::from_secs(3);

/// Environment variable that turns a missing io_uring into a reported skip instead of a
/// failure.
pub const ALLOW_MISSING_URING: &str = "RINGMILL_TEST_ALLOW_MISSING_URING";

// ---------------------------------------------------------------------------------------
// The backend matrix
// ---------------------------------------------------------------------------------------

/// Turns each `fn name(backend: Backend) { body }` into
/// `mod name { #[test] fn uring() {..} #[test] fn mio() {..} }`.
///
/// The `uring` test is ignored (with the reason) when the io_uring driver is not built. When
/// it is built but the kernel refuses io_uring, the test fails with the reason, unless
/// `RINGMILL_TEST_ALLOW_MISSING_URING=1`, in which case it prints
/// `skipped: io_uring unavailable: <reason>` and returns: a missing backend is never a
/// silent pass.
#[macro_export]
macro_rules! backend_matrix {
    ($( $(#[$meta:meta])* fn $name:ident ($backend:ident : Backend) $body:block )*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[allow(unused_variables)]
                fn body($backend: ::ringmill::Backend) $body

                #[test]
                #[cfg_attr(
                    not(all(target_os = "linux", feature = "uring")),
                    ignore = "skipped: io_uring driver not built"
                )]
                fn uring() {
                    if $crate::common::require_backend(::ringmill::Backend::Uring) {
                        body(::ringmill::Backend::Uring);
                    }
                }

                #[test]
                fn mio() {
                    if $crate::common::require_backend(::ringmill::Backend::Mio) {
                        body(::ringmill::Backend::Mio);
                    }
                }
            }
        )*
    };
}

/// Whether a test on `backend` should run.
///
/// For io_uring this builds a one-thread loop once per process. If that fails, the test
/// fails with the reason, unless [`ALLOW_MISSING_URING`] is `1`: then it prints the skip
/// and returns `false`.
pub fn require_backend(backend: Backend) -> bool {
    if backend != Backend::Uring {
        return true;
    }
    static PROBE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        match EventLoop::builder()
            .threads(1)
            .backend(Backend::Uring)
            .build()
        {
            Ok(event_loop) => {
                assert_eq!(event_loop.backend(), Backend::Uring);
                event_loop.stop();
                Ok(())
            }
            Err(e) => Err(match e.downcast_ref::<NetworkError>() {
                Some(NetworkError::BackendUnavailable { reason, .. }) => reason.clone(),
                _ => e.to_string(),
            }),
        }
    });
    match probe {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var(ALLOW_MISSING_URING).as_deref() == Ok("1") {
                println!("skipped: io_uring unavailable: {reason}");
                eprintln!("skipped: io_uring unavailable: {reason}");
                false
            } else {
                panic!(
                    "io_uring unavailable: {reason} \
                     (set {ALLOW_MISSING_URING}=1 to report this as a skip)"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Event loops and servers
// ---------------------------------------------------------------------------------------

/// A two-thread event loop on `backend` (forced, never `Auto`).
pub fn event_loop(backend: Backend) -> EventLoop {
    event_loop_with(backend, |b| b)
}

/// A two-thread event loop on `backend`, with further settings from `configure`.
pub fn event_loop_with(
    backend: Backend,
    configure: impl FnOnce(EventLoopBuilder) -> EventLoopBuilder,
) -> EventLoop {
    let builder = configure(EventLoop::builder().threads(2)).backend(backend);
    let event_loop = builder
        .build()
        .unwrap_or_else(|e| panic!("building a {backend} event loop failed: {e}"));
    assert_eq!(
        event_loop.backend(),
        backend,
        "asked for {backend}, got {} ({})",
        event_loop.backend(),
        event_loop.backend_reason()
    );
    event_loop
}

/// A server configuration builder bound to `127.0.0.1:0`.
pub fn server_config() -> TcpServerConfigBuilder {
    TcpServerConfig::builder().address(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Builds and starts a server with `config` (see [`server_config`]) on `event_loop`.
pub fn start_server<H: NetworkHandler>(
    event_loop: &EventLoop,
    config: TcpServerConfig,
    handler: H,
) -> TcpServer<H> {
    let server = TcpServer::new(config, handler).expect("TcpServer::new");
    server.start(event_loop).expect("TcpServer::start");
    server
}

/// The address a started server listens on.
pub fn addr_of<H: NetworkHandler>(server: &TcpServer<H>) -> SocketAddr {
    server.local_addr().expect("local_addr")
}

/// Downcasts a library error to [`NetworkError`], panicking with the error if it is not one.
pub fn network_error<'a>(
    e: &'a (dyn std::error::Error + Send + Sync + 'static),
) -> &'a NetworkError {
    e.downcast_ref::<NetworkError>()
        .unwrap_or_else(|| panic!("expected a NetworkError, got {e:?}"))
}

// ---------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------

/// A value behind a mutex with a condvar: writers [`update`](Self::update) it (notifying
/// every waiter), readers [`wait_until`](Self::wait_until) a condition holds, with a
/// deadline and a clear panic message.
pub struct Shared<T> {
    value: Mutex<T>,
    cond: Condvar,
}

impl<T: Default> Default for Shared<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> Shared<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self {
            value: Mutex::new(value),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the value and wakes every waiter.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let r = f(&mut self.lock());
        self.cond.notify_all();
        r
    }

    /// Reads the value.
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.lock())
    }

    /// Waits until `cond` holds, then returns what `f` makes of the value. Panics after
    /// `timeout` with `what` and the value's debug form.
    pub fn wait_until(&self, timeout: Duration, what: &str, mut cond: impl FnMut(&T) -> bool)
    where
        T: fmt::Debug,
    {
        self.wait_map(timeout, what, |v| cond(v).then_some(()))
    }

    /// Waits until `f` returns `Some`, and returns it. Panics after `timeout`.
    pub fn wait_map<R>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&T) -> Option<R>,
    ) -> R
    where
        T: fmt::Debug,
    {
        match self.try_wait_map(timeout, &mut f) {
            Some(r) => r,
            None => {
                let state = self.lock();
                let mut shown = format!("{:?}", &*state);
                if shown.len() > 4000 {
                    let mut end = 4000;
                    while !shown.is_char_boundary(end) {
                        end -= 1;
                    }
                    shown.truncate(end);
                    shown.push_str(" ...");
                }
                panic!("timed out after {timeout:?} waiting for {what}; state: {shown}");
            }
        }
    }

    /// Waits until `f` returns `Some` or `timeout` passes (then `None`); no panic.
    pub fn try_wait_map<R>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&T) -> Option<R>,
    ) -> Option<R> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock();
        loop {
            if let Some(r) = f(&guard) {
                return Some(r);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = self
                .cond
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.lock().fmt(f)
    }
}

/// Waits until `cond` holds, checking it every few milliseconds (a condvar wait with a
/// short timeout). Only for what nothing can notify: the fd table, the thread count,
/// kernel socket state. Panics after `timeout` with `what`.
pub fn poll_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    if !try_poll_until(timeout, &mut cond) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Like [`poll_until`], returning whether `cond` came true instead of panicking.
pub fn try_poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let pause = Mutex::new(());
    let never = Condvar::new();
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let guard = pause.lock().unwrap();
        let _ = never.wait_timeout(guard, Duration::from_millis(5)).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Recording callbacks
// ---------------------------------------------------------------------------------------

/// One callback, as seen on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    /// `on_connect`.
    Connect,
    /// `on_data` with this many bytes.
    Data(usize),
    /// `on_writable`.
    Writable,
    /// `on_drained`.
    Drained,
    /// `on_error(Some(id), e)`, with the error's kind (see [`error_kind`]).
    Error(String),
    /// `on_disconnect`.
    Disconnect,
}

/// The [`io::ErrorKind`] inside `e`, or what `e` holds if it is not an [`io::Error`].
fn io_kind(e: &NetworkError) -> String {
    match e.io_error() {
        Some(io) => format!("{:?}", io.kind()),
        None => format!("{e:?}"),
    }
}

/// The variant name of a [`NetworkError`] (`"HandlerError"`, `"Io"`, ...). For `Io`,
/// `Accept` and `Connect` the [`io::ErrorKind`] follows, as in `"Connect(TimedOut)"`.
pub fn error_kind(e: &NetworkError) -> String {
    match e {
        NetworkError::Io(_) => format!("Io({})", io_kind(e)),
        NetworkError::Accept(_) => format!("Accept({})", io_kind(e)),
        NetworkError::Connect(_) => format!("Connect({})", io_kind(e)),
        NetworkError::MaxConnectionsReached(_) => "MaxConnectionsReached".into(),
        NetworkError::Configuration(_) => "Configuration".into(),
        NetworkError::HandlerError(_) => "HandlerError".into(),
        NetworkError::HandlerPanic(_) => "HandlerPanic".into(),
        NetworkError::IdleTimeout(_) => "IdleTimeout".into(),
        NetworkError::EventLoopGone => "EventLoopGone".into(),
        NetworkError::ConnectionNotFound(_) => "ConnectionNotFound".into(),
        NetworkError::Send(_) => "Send".into(),
        NetworkError::BackendUnavailable { .. } => "BackendUnavailable".into(),
        NetworkError::InvalidState(_) => "InvalidState".into(),
        _ => format!("{e:?}"),
    }
}

/// One `on_error` call.
#[derive(Debug, Clone)]
pub struct ErrorRecord {
    /// The connection, or `None` for a server-level error.
    pub conn: Option<ConnectionId>,
    /// [`error_kind`] of the error.
    pub kind: String,
    /// The error's display form.
    pub message: String,
}

/// What one connection went through.
#[derive(Debug, Clone, Default)]
pub struct ConnTrace {
    /// Callbacks in the order they ran.
    pub events: Vec<Ev>,
    /// Bytes received (empty when the recorder does not keep bytes).
    pub data: Vec<u8>,
    /// Bytes received, counted even when not kept.
    pub bytes: usize,
    /// The peer, from `NetworkEvent::ConnectionEstablished`.
    pub peer: Option<SocketAddr>,
}

impl ConnTrace {
    /// `on_connect` calls.
    pub fn connects(&self) -> usize {
        self.events.iter().filter(|e| **e == Ev::Connect).count()
    }

    /// `on_disconnect` calls.
    pub fn disconnects(&self) -> usize {
        self.events.iter().filter(|e| **e == Ev::Disconnect).count()
    }

    /// Whether `on_disconnect` ran.
    pub fn closed(&self) -> bool {
        self.disconnects() > 0
    }

    /// Kinds of the errors reported for this connection.
    pub fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Ev::Error(k) => Some(k.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Everything a [`Recorder`] has seen.
#[derive(Default)]
pub struct Record {
    /// Per connection, in order of first appearance in `order`.
    pub conns: HashMap<ConnectionId, ConnTrace>,
    /// Connections in the order their first callback ran.
    pub order: Vec<ConnectionId>,
    /// Every `on_error`, connection-level and server-level.
    pub errors: Vec<ErrorRecord>,
    /// Every `on_event`.
    pub events: Vec<NetworkEvent>,
    /// Breaches of the callback-order contract found while recording: `on_data` before
    /// `on_connect`, anything after `on_disconnect`, a second `on_connect`.
    pub violations: Vec<String>,
    /// Total `on_connect` calls.
    pub connects: usize,
    /// Total `on_disconnect` calls.
    pub disconnects: usize,
    /// Whether `data` keeps bytes.
    pub keep_bytes: bool,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut conns: Vec<_> = self.conns.iter().collect();
        conns.sort_by_key(|(id, _)| **id);
        let mut m = f.debug_struct("Record");
        m.field("connects", &self.connects)
            .field("disconnects", &self.disconnects)
            .field("errors", &self.errors)
            .field("violations", &self.violations);
        let summary: Vec<String> = conns
            .iter()
            .take(20)
            .map(|(id, t)| {
                let mut evs: Vec<String> = Vec::new();
                let mut data = 0usize;
                for e in &t.events {
                    match e {
                        Ev::Data(n) => data += n,
                        other => {
                            if data > 0 {
                                evs.push(format!("Data*{data}"));
                                data = 0;
                            }
                            evs.push(format!("{other:?}"));
                        }
                    }
                }
                if data > 0 {
                    evs.push(format!("Data*{data}"));
                }
                format!("{id}: [{}] bytes={}", evs.join(", "), t.bytes)
            })
            .collect();
        m.field("conns", &summary);
        if conns.len() > 20 {
            m.field("more_conns", &(conns.len() - 20));
        }
        m.finish()
    }
}

impl Record {
    /// The trace of `id` (empty if it never appeared).
    pub fn trace(&self, id: ConnectionId) -> ConnTrace {
        self.conns.get(&id).cloned().unwrap_or_default()
    }

    /// Connections whose `on_disconnect` ran.
    pub fn closed_count(&self) -> usize {
        self.conns.values().filter(|t| t.closed()).count()
    }

    /// Connections connected and not yet disconnected.
    pub fn open(&self) -> Vec<ConnectionId> {
        self.order
            .iter()
            .copied()
            .filter(|id| {
                let t = &self.conns[id];
                t.connects() > 0 && !t.closed()
            })
            .collect()
    }

    fn conn(&mut self, id: ConnectionId) -> &mut ConnTrace {
        if !self.conns.contains_key(&id) {
            self.order.push(id);
        }
        self.conns.entry(id).or_default()
    }

    fn push(&mut self, id: ConnectionId, ev: Ev) {
        let trace = self.conn(id);
        let connected = trace.connects() > 0;
        let closed = trace.closed();
        let mut violation = None;
        if closed {
            violation = Some(format!("{id}: {ev:?} after on_disconnect"));
        } else {
            match &ev {
                Ev::Connect if connected => {
                    violation = Some(format!("{id}: second on_connect"));
                }
                Ev::Connect | Ev::Error(_) => {}
                other if !connected => {
                    violation = Some(format!("{id}: {other:?} before on_connect"));
                }
                _ => {}
            }
        }
        trace.events.push(ev.clone());
        match ev {
            Ev::Connect => self.connects += 1,
            Ev::Disconnect => self.disconnects += 1,
            _ => {}
        }
        if let Some(v) = violation {
            self.violations.push(v);
        }
    }
}

/// Records every callback of the handlers that share it, per connection, and lets tests
/// wait for what they expect with a deadline.
///
/// Checks the callback-order contract as it goes (see [`Record::violations`]).
pub struct Recorder {
    state: Shared<Record>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.state.fmt(f)
    }
}

impl Recorder {
    /// A recorder that keeps received bytes.
    pub fn new() -> Self {
        Self {
            state: Shared::new(Record {
                keep_bytes: true,
                ..Record::default()
            }),
        }
    }

    /// A recorder that only counts received bytes (for bulk transfers).
    pub fn counting() -> Self {
        Self {
            state: Shared::new(Record::default()),
        }
    }

    /// A new shared recorder that keeps bytes.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// Records `ev` for `id`.
    pub fn push(&self, id: ConnectionId, ev: Ev) {
        self.state.update(|r| r.push(id, ev));
    }

    /// Records `on_data`.
    pub fn data(&self, id: ConnectionId, data: &[u8]) {
        self.state.update(|r| {
            r.push(id, Ev::Data(data.len()));
            let keep = r.keep_bytes;
            let t = r.conn(id);
            t.bytes += data.len();
            if keep {
                t.data.extend_from_slice(data);
            }
        });
    }

    /// Records `on_error`.
    pub fn error(&self, id: Option<ConnectionId>, e: &NetworkError) {
        let rec = ErrorRecord {
            conn: id,
            kind: error_kind(e),
            message: e.to_string(),
        };
        self.state.update(|r| {
            if let Some(id) = id {
                r.push(id, Ev::Error(rec.kind.clone()));
            }
            r.errors.push(rec);
        });
    }

    /// Records `on_event`.
    pub fn event(&self, e: &NetworkEvent) {
        self.state.update(|r| {
            if let NetworkEvent::ConnectionEstablished(id, peer) = e {
                r.conn(*id).peer = Some(*peer);
            }
            r.events.push(e.clone());
        });
    }

    /// Reads the record.
    pub fn with<R>(&self, f: impl FnOnce(&Record) -> R) -> R {
        self.state.with(f)
    }

    /// Waits until `cond` holds on the record; panics after `timeout` naming `what` and
    /// showing the record.
    pub fn wait(&self, timeout: Duration, what: &str, cond: impl FnMut(&Record) -> bool) {
        self.state.wait_until(timeout, what, cond)
    }

    /// Waits until `f` returns `Some`; panics after `timeout`.
    pub fn wait_map<R>(
        &self,
        timeout: Duration,
        what: &str,
        f: impl FnMut(&Record) -> Option<R>,
    ) -> R {
        self.state.wait_map(timeout, what, f)
    }

    /// Waits for `n` `on_connect` calls in total.
    pub fn wait_connects(&self, n: usize, timeout: Duration) {
        self.wait(timeout, &format!("{n} on_connect calls"), |r| {
            r.connects >= n
        })
    }

    /// Waits for `n` `on_disconnect` calls in total.
    pub fn wait_disconnects(&self, n: usize, timeout: Duration) {
        self.wait(timeout, &format!("{n} on_disconnect calls"), |r| {
            r.disconnects >= n
        })
    }

    /// Waits for the `index`-th connection (in order of `on_connect`) and returns its id.
    pub fn wait_conn(&self, index: usize, timeout: Duration) -> ConnectionId {
        self.wait_map(timeout, &format!("connection #{index}"), |r| {
            r.order
                .iter()
                .filter(|id| r.conns[id].connects() > 0)
                .nth(index)
                .copied()
        })
    }

    /// Waits for the connection whose peer is `peer` (the client socket's local address,
    /// from `NetworkEvent::ConnectionEstablished`) and returns its id.
    pub fn wait_peer(&self, peer: SocketAddr, timeout: Duration) -> ConnectionId {
        self.wait_map(timeout, &format!("a connection from {peer}"), |r| {
            r.order
                .iter()
                .find(|id| r.conns[id].peer == Some(peer))
                .copied()
        })
    }

    /// Waits until `id` has received at least `n` bytes.
    pub fn wait_bytes(&self, id: ConnectionId, n: usize, timeout: Duration) {
        self.wait(timeout, &format!("{n} bytes on {id}"), |r| {
            r.conns.get(&id).is_some_and(|t| t.bytes >= n)
        })
    }

    /// Waits until `id` has had its `on_disconnect`.
    pub fn wait_closed(&self, id: ConnectionId, timeout: Duration) {
        self.wait(timeout, &format!("on_disconnect of {id}"), |r| {
            r.conns.get(&id).is_some_and(|t| t.closed())
        })
    }

    /// Waits for an `on_error` whose kind starts with `kind`, and returns it.
    pub fn wait_error(&self, kind: &str, timeout: Duration) -> ErrorRecord {
        self.wait_map(timeout, &format!("on_error of kind {kind}"), |r| {
            r.errors.iter().find(|e| e.kind.starts_with(kind)).cloned()
        })
    }

    /// The trace of `id`.
    pub fn trace(&self, id: ConnectionId) -> ConnTrace {
        self.with(|r| r.trace(id))
    }

    /// Bytes `id` has received.
    pub fn received(&self, id: ConnectionId) -> Vec<u8> {
        self.with(|r| r.trace(id).data)
    }

    /// Connections in the order they first appeared.
    pub fn connections(&self) -> Vec<ConnectionId> {
        self.with(|r| r.order.clone())
    }

    /// Every `on_error` so far.
    pub fn errors(&self) -> Vec<ErrorRecord> {
        self.with(|r| r.errors.clone())
    }

    /// Total `on_connect` calls.
    pub fn connects(&self) -> usize {
        self.with(|r| r.connects)
    }

    /// Total `on_disconnect` calls.
    pub fn disconnects(&self) -> usize {
        self.with(|r| r.disconnects)
    }

    /// Panics if any callback-order violation was seen.
    pub fn assert_no_violations(&self) {
        self.with(|r| {
            assert!(
                r.violations.is_empty(),
                "callback order violated: {:?}",
                r.violations
            )
        })
    }

    /// Panics unless every connection that had `on_connect` had exactly one
    /// `on_disconnect` and nothing out of order.
    pub fn assert_all_closed_once(&self) {
        self.assert_no_violations();
        self.with(|r| {
            for id in &r.order {
                let t = &r.conns[id];
                if t.connects() > 0 {
                    assert_eq!(
                        t.disconnects(),
                        1,
                        "{id} must have exactly one on_disconnect: {:?}",
                        t.events
                    );
                    assert_eq!(
                        t.events.last(),
                        Some(&Ev::Disconnect),
                        "{id}: nothing may follow on_disconnect: {:?}",
                        t.events
                    );
                }
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

/// Echo state shared by [`Echo`] and [`Recording`]: sends back what arrives, and on
/// `Backpressure` keeps the refused bytes, pauses reads, and sends them on `on_drained`.
#[derive(Default)]
pub struct EchoState {
    stash: Mutex<HashMap<ConnectionId, Vec<u8>>>,
}

impl EchoState {
    /// Echoes `data` on `conn`.
    pub fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pending) = stash.get_mut(&conn) {
            // Reads are paused but a chunk was already on its way: keep order.
            pending.extend_from_slice(data);
            return Ok(());
        }
        match ctx.send_to(conn, data) {
            Ok(()) => Ok(()),
            Err(e) => match e.downcast_ref::<SendError>() {
                Some(SendError::Backpressure) => {
                    stash.insert(conn, data.to_vec());
                    if let Some(sender) = ctx.sender(conn) {
                        sender.pause_reads();
                    }
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    /// Sends what was refused, and resumes reading.
    pub fn on_drained(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pending) = stash.remove(&conn) {
            match ctx.send_to(conn, &pending) {
                Ok(()) => {
                    if let Some(sender) = ctx.sender(conn) {
                        sender.resume_reads();
                    }
                }
                Err(e) => match e.downcast_ref::<SendError>() {
                    Some(SendError::Backpressure) => {
                        stash.insert(conn, pending);
                    }
                    _ => return Err(e),
                },
            }
        }
        Ok(())
    }

    /// Forgets a closed connection.
    pub fn on_disconnect(&self, conn: ConnectionId) {
        self.stash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn);
    }
}

/// Echoes every byte back, respecting backpressure (pauses reads while refused bytes wait
/// for `on_drained`).
#[derive(Default)]
pub struct Echo {
    state: EchoState,
}

impl Echo {
    /// An echo handler.
    pub fn new() -> Self {
        Self::default()
    }
}

impl NetworkHandler for Echo {
    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        self.state.on_data(ctx, conn, data)
    }

    fn on_drained(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.state.on_drained(ctx, conn)
    }

    fn on_disconnect(&self, _ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.state.on_disconnect(conn);
        Ok(())
    }
}

/// Ignores everything.
pub struct Silent;

impl NetworkHandler for Silent {
    fn on_data(&self, _ctx: &ServerContext, _conn: ConnectionId, _data: &[u8]) -> Result<()> {
        Ok(())
    }
}

type ConnHook = Box<dyn Fn(&ServerContext, ConnectionId) -> Result<()> + Send + Sync>;
type DataHook = Box<dyn Fn(&ServerContext, ConnectionId, &[u8]) -> Result<()> + Send + Sync>;
type ErrorHook = Box<dyn Fn(&ServerContext, Option<ConnectionId>, &NetworkError) + Send + Sync>;

/// Records every callback into a [`Recorder`], optionally echoes, and runs optional hooks
/// after recording (a hook's `Err` or panic is the handler's).
pub struct Recording {
    rec: Arc<Recorder>,
    echo: Option<EchoState>,
    on_connect: Option<ConnHook>,
    on_data: Option<DataHook>,
    on_disconnect: Option<ConnHook>,
    on_writable: Option<ConnHook>,
    on_drained: Option<ConnHook>,
    on_error: Option<ErrorHook>,
}

impl Recording {
    /// Records into `rec`; does nothing else.
    pub fn new(rec: &Arc<Recorder>) -> Self {
        Self {
            rec: Arc::clone(rec),
            echo: None,
            on_connect: None,
            on_data: None,
            on_disconnect: None,
            on_writable: None,
            on_drained: None,
            on_error: None,
        }
    }

    /// Records into `rec` and echoes (respecting backpressure, like [`Echo`]).
    pub fn echo(rec: &Arc<Recorder>) -> Self {
        Self::new(rec).with_echo()
    }

    /// Turns echoing on (it runs after the `on_data` hook, if any).
    pub fn with_echo(mut self) -> Self {
        self.echo = Some(EchoState::default());
        self
    }

    /// The recorder.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.rec
    }

    /// Runs `f` in `on_connect`, after recording.
    pub fn on_connect(
        mut self,
        f: impl Fn(&ServerContext, ConnectionId) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_connect = Some(Box::new(f));
        self
    }

    /// Runs `f` in `on_data`, after recording (and before echoing).
    pub fn on_data(
        mut self,
        f: impl Fn(&ServerContext, ConnectionId, &[u8]) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_data = Some(Box::new(f));
        self
    }

    /// Runs `f` in `on_disconnect`, after recording.
    pub fn on_disconnect(
        mut self,
        f: impl Fn(&ServerContext, ConnectionId) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_disconnect = Some(Box::new(f));
        self
    }

    /// Runs `f` in `on_writable`, after recording.
    pub fn on_writable(
        mut self,
        f: impl Fn(&ServerContext, ConnectionId) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_writable = Some(Box::new(f));
        self
    }

    /// Runs `f` in `on_drained`, after recording (and after the echo's own drain work).
    pub fn on_drained(
        mut self,
        f: impl Fn(&ServerContext, ConnectionId) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_drained = Some(Box::new(f));
        self
    }

    /// Runs `f` in `on_error`, after recording.
    pub fn on_error(
        mut self,
        f: impl Fn(&ServerContext, Option<ConnectionId>, &NetworkError) + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }
}

impl NetworkHandler for Recording {
    fn on_event(&self, _ctx: &ServerContext, event: NetworkEvent) -> Result<()> {
        self.rec.event(&event);
        Ok(())
    }

    fn on_connect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.rec.push(conn, Ev::Connect);
        match &self.on_connect {
            Some(f) => f(ctx, conn),
            None => Ok(()),
        }
    }

    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        self.rec.data(conn, data);
        if let Some(f) = &self.on_data {
            f(ctx, conn, data)?;
        }
        match &self.echo {
            Some(echo) => echo.on_data(ctx, conn, data),
            None => Ok(()),
        }
    }

    fn on_disconnect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.rec.push(conn, Ev::Disconnect);
        if let Some(echo) = &self.echo {
            echo.on_disconnect(conn);
        }
        match &self.on_disconnect {
            Some(f) => f(ctx, conn),
            None => Ok(()),
        }
    }

    fn on_writable(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.rec.push(conn, Ev::Writable);
        match &self.on_writable {
            Some(f) => f(ctx, conn),
            None => Ok(()),
        }
    }

    fn on_drained(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.rec.push(conn, Ev::Drained);
        if let Some(echo) = &self.echo {
            echo.on_drained(ctx, conn)?;
        }
        match &self.on_drained {
            Some(f) => f(ctx, conn),
            None => Ok(()),
        }
    }

    fn on_error(&self, ctx: &ServerContext, conn: Option<ConnectionId>, error: NetworkError) {
        self.rec.error(conn, &error);
        if let Some(f) = &self.on_error {
            f(ctx, conn, &error);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Blocking loopback clients
// ---------------------------------------------------------------------------------------

/// Connects a blocking client with read and write timeouts of [`WAIT`] (so a broken test
/// fails instead of hanging) and `TCP_NODELAY`.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream =
        TcpStream::connect_timeout(&addr, WAIT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads exactly `n` bytes, failing the test after `timeout` or on EOF.
pub fn read_exact_within(stream: &mut TcpStream, n: usize, timeout: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    read_into_within(stream, &mut buf, timeout);
    buf
}

/// Fills `buf`, failing the test after `timeout` or on EOF.
pub fn read_into_within(stream: &mut TcpStream, buf: &mut [u8], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out after {timeout:?}: read {got} of {} bytes",
            buf.len()
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf[got..]) {
            Ok(0) => panic!("EOF after {got} of {} bytes", buf.len()),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => panic!("read failed after {got} of {} bytes: {e}", buf.len()),
        }
    }
}

/// Reads until EOF, failing the test after `timeout` or on an error.
pub fn read_to_eof(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    match try_read_to_eof(stream, timeout) {
        Ok(v) => v,
        Err((got, e)) => panic!("reading to EOF: {e} after {} bytes", got.len()),
    }
}

/// Reads until EOF or an error (returned with the bytes read before it); a timeout is an
/// error of kind `TimedOut`.
pub fn try_read_to_eof(
    stream: &mut TcpStream,
    timeout: Duration,
) -> std::result::Result<Vec<u8>, (Vec<u8>, io::Error)> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((
                out,
                io::Error::new(io::ErrorKind::TimedOut, "no EOF before the deadline"),
            ));
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err((out, e)),
        }
    }
}

/// Reads to EOF or a reset within [`WAIT`]: the server closed the connection.
pub fn expect_closed(stream: &mut TcpStream) {
    match try_read_to_eof(stream, WAIT) {
        Ok(_) => {}
        Err((_, e)) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err((_, e)) => panic!("the server should have closed the connection: {e}"),
    }
}

/// Writes `data` and reads its echo within [`WAIT`].
pub fn round_trip(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).unwrap();
    let got = read_exact_within(stream, data.len(), WAIT);
    assert_bytes_eq(&got, data, "echo");
}

/// Whether `e` is a read/write timeout.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Closes `stream` with an RST instead of a FIN (`SO_LINGER` 0, then close).
pub fn reset_close(stream: TcpStream) {
    set_linger_zero(&stream);
    drop(stream);
}

/// Sets `SO_LINGER` to 0, so closing sends an RST.
pub fn set_linger_zero(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

/// Half-closes the write side (sends a FIN).
pub fn shutdown_write(stream: &TcpStream) {
    stream.shutdown(Shutdown::Write).expect("shutdown(Write)");
}

// ---------------------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------------------

/// A small deterministic PRNG (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi);
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

/// `len` deterministic pseudo-random bytes for `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// Streaming FNV-1a 64: the same digest whatever the chunking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// A fresh digest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> u64 {
        let mut f = Self::new();
        f.update(data);
        f.0
    }
}

/// Asserts two byte strings are equal, reporting the first difference instead of dumping
/// both.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {}; first difference at offset {first} \
         (got {:?}, want {:?})",
        got.len(),
        want.len(),
        &got[first..got.len().min(first + 16)],
        &want[first..want.len().min(first + 16)],
    );
}

// ---------------------------------------------------------------------------------------
// Process resources
// ---------------------------------------------------------------------------------------

/// Open file descriptors of this process (from `/proc/self/fd`, not counting the one used
/// to list it).
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
        .saturating_sub(1)
}

/// Open file descriptors with what they point to, for failure messages.
pub fn fd_list() -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

/// Lowers this process's soft `RLIMIT_NOFILE` so that exactly `room` more descriptors can
/// be opened (new descriptors take the lowest free numbers, so the limit goes just past the
/// `room`-th free number). For the EMFILE tests: set it before a server starts accepting,
/// since io_uring reads the limit when an accept is submitted, not when it completes.
pub fn leave_room_for_descriptors(room: usize) {
    let open: std::collections::HashSet<u64> = fd_list()
        .iter()
        .filter(|(_, target)| !target.ends_with("/fd")) // the listing's own
        .map(|(fd, _)| *fd as u64)
        .collect();
    let last_free = (0u64..)
        .filter(|fd| !open.contains(fd))
        .nth(room - 1)
        .expect("a free descriptor number");
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    limit.rlim_cur = (last_free + 1) as libc::rlim_t;
    // SAFETY: lowers this process's soft limit; the hard limit is unchanged.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// Process CPU time (user + system) so far.
pub fn cpu_time() -> Duration {
    // SAFETY: all-zero is a valid `rusage`; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Threads of this process (from `/proc/self/task`).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// Raises the soft `RLIMIT_NOFILE` to at least `want` (up to the hard limit) and returns
/// the resulting soft limit.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn raise_nofile_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for getrlimit to fill.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", io::Error::last_os_error());
    if (lim.rlim_cur as u64) < want {
        let target = if lim.rlim_max == libc::RLIM_INFINITY {
            want
        } else {
            want.min(lim.rlim_max as u64)
        };
        let new = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `new` is a valid rlimit; raising the soft limit up to the hard limit
        // affects only this process.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) };
        assert_eq!(rc, 0, "setrlimit: {}", io::Error::last_os_error());
        lim.rlim_cur = new.rlim_cur;
    }
    lim.rlim_cur as u64
}
