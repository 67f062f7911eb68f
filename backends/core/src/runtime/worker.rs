//! One loop thread: the connection state machine, generic over the driver.
//!
//! Each iteration:
//!
//! 1. `poll` the driver; completions update connection state and run callbacks. Work that
//!    needs the driver (register, receive, close, resume) is queued as an [`Op`], since the
//!    driver is busy delivering completions.
//! 2. take the accepted streams and open their connections (`on_connect`);
//! 3. run the commands other threads (and this one's callbacks) queued in the inbox;
//! 4. fire due timers (the loop's own and the user's);
//! 5. apply the queued ops, then flush: every connection with queued output gets one send
//!    covering everything queued during the iteration.
//!
//! Connection phases: `Connecting` (clients) → `Open` → `Draining` (graceful close:
//! writing what is queued, reading nothing) → `Closing` (the driver is closing it) → gone,
//! after the driver's `Closed`, which is when `on_disconnect` runs.

mod dead;
mod housekeeping;
mod layered;

use super::callback::{self, Outcome};
use super::timer::{deadline_after, TimerKind, Timers};
use super::LoopSettings;
use crate::admission::Ticket;
use crate::conn::ConnShared;
use crate::context::ServerContext;
use crate::driver::{Completion, Driver, Flow, ListenerId, Slot};
use crate::error::{ConfigError, NetworkError, NetworkEvent};
use crate::id::ConnectionId;
use crate::inbox::{CloseMode, Command, LoopShared};
use crate::layer::Layer;
use crate::metrics::Stat;
use crate::service::Service;
use layered::Layered;
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Send buffers larger than this are released when a connection's queue empties, so an
/// idle connection does not keep a burst's worth of memory.
const KEEP_SEND_CAPACITY: usize = 64 * 1024;
/// First and longest pause after a resource error while accepting.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Open,
    Draining,
    /// Everything queued was written and the write side is shut down: reading on (and
    /// discarding) until the peer's end of stream or the linger deadline, then closing.
    /// Closing a socket with unread input would reset the connection and drop the tail
    /// of what was sent.
    Lingering,
    Closing,
}

/// The loop's half of a connection.
struct Conn {
    shared: Arc<ConnShared>,
    service: Arc<Service>,
    ctx: ServerContext,
    phase: Phase,
    /// `on_connect` ran, so `on_disconnect` is owed.
    established: bool,
    /// Holds a place under the service's `max_connections`.
    counted: bool,
    /// What admission took for this connection, given back with its place.
    ticket: Ticket,
    /// End of stream or a read error was seen: no more receiving.
    read_done: bool,
    /// A graceful close waits for the peer's end of stream (see [`Phase::Lingering`]);
    /// cleared when its server stops, which does not wait for peers.
    linger: bool,
    /// The driver is delivering `Received` for this connection.
    receiving: bool,
    /// Bytes received but not yet delivered, because reads were paused mid-delivery.
    stash: Vec<u8>,
    /// The buffer handed to the driver's send (taken from the shared queue).
    sending: Vec<u8>,
    /// How much of `sending` the kernel has taken.
    sent: usize,
    in_flight: bool,
    in_flush_list: bool,
    last_active: Instant,
    peer: Option<SocketAddr>,
    /// The connection's layers; `None` (no allocation, one branch) for plain TCP.
    layers: Option<Box<Layered>>,
}

impl Conn {
    /// A connection entering `phase` (`Open` once accepted, `Connecting` for a client);
    /// an accepted one holds a place under `max_connections` (`counted`).
    fn new(
        shared: Arc<ConnShared>,
        service: Arc<Service>,
        ctx: ServerContext,
        phase: Phase,
        peer: SocketAddr,
        now: Instant,
    ) -> Self {
        Self {
            shared,
            service,
            ctx,
            phase,
            established: false,
            counted: phase == Phase::Open,
            ticket: Ticket::Free,
            read_done: false,
            linger: true,
            receiving: false,
            stash: Vec::new(),
            sending: Vec::new(),
            sent: 0,
            in_flight: false,
            in_flush_list: false,
            last_active: now,
            peer: Some(peer),
            layers: None,
        }
    }

    fn id(&self) -> ConnectionId {
        self.shared.id
    }
}

/// Runs `on_connect` for `conn`, then reports `ConnectionEstablished` when its peer
/// address is known (that report's own outcome is ignored). Returns `on_connect`'s
/// outcome, for `after_callback`.
fn announce_connect(conn: &Conn) -> Outcome {
    let id = conn.id();
    let handler = &conn.service.handler;
    let outcome = callback::call(|| handler.on_connect(&conn.ctx, id));
    if let Some(peer) = conn.peer {
        let _ = callback::call(|| {
            handler.on_event(&conn.ctx, NetworkEvent::ConnectionEstablished(id, peer))
        });
    }
    outcome
}

struct Listener {
    service: Arc<Service>,
    ctx: ServerContext,
    paused: bool,
}

/// Driver work queued while the driver was busy delivering completions.
enum Op {
    Recv(Slot),
    PauseRecv(Slot),
    ShutdownWrite(Slot),
    Close(Slot),
    /// Write what the socket takes at once of what is queued, then close (`CloseMode::Discard`).
    Discard(Slot),
    ResumeAccept(ListenerId),
}

/// Everything of a loop but its driver, so completions can update it while the driver is
/// borrowed by `poll`.
pub(crate) struct State {
    shared: Arc<LoopShared>,
    settings: LoopSettings,
    conns: Vec<Option<Conn>>,
    free: Vec<u32>,
    live: usize,
    listeners: HashMap<ListenerId, Listener>,
    next_listener: u32,
    timers: Timers,
    ops: Vec<Op>,
    flush: Vec<Slot>,
    accepted: Vec<(ListenerId, TcpStream, SocketAddr)>,
    commands: Vec<Command>,
    now: Instant,
    stopping: bool,
    accept_backoff: Duration,
    accept_error_reported: bool,
    /// `TcpServer::stop` callers waiting until none of their service's connections is
    /// left on this loop (each `on_disconnect` delivered).
    stop_acks: Vec<(Arc<Service>, std::sync::mpsc::SyncSender<()>)>,
}

/// A loop thread's state and its driver.
pub(crate) struct Worker<D: Driver> {
    driver: D,
    state: State,
}

impl<D: Driver> Worker<D> {
    pub(crate) fn new(driver: D, shared: Arc<LoopShared>, settings: LoopSettings) -> Self {
        let now = shared.clock().now();
        Self {
            driver,
            state: State {
                shared,
                settings,
                conns: Vec::new(),
                free: Vec::new(),
                live: 0,
                listeners: HashMap::new(),
                next_listener: 0,
                timers: Timers::default(),
                ops: Vec::new(),
                flush: Vec::new(),
                accepted: Vec::new(),
                commands: Vec::new(),
                now,
                stopping: false,
                accept_backoff: ACCEPT_BACKOFF_MIN,
                accept_error_reported: false,
                stop_acks: Vec::new(),
            },
        }
    }

    /// The loop was stopped while held, before it ever ran: nothing is dispatched. What
    /// was queued is dropped: listeners closed, clients' connects abandoned (marked closed
    /// and finished, without a callback), timers and closures dropped unrun.
    pub(crate) fn never_ran(&mut self) {
        for command in self.state.shared.close_inbox() {
            match command {
                Command::Connect { service, conn, .. } => {
                    conn.lock().closed = true;
                    service.conns.remove(conn.id);
                    conn.set_finished();
                }
                other => self.state.refuse(other),
            }
        }
    }

    /// Runs until stopped and every connection is closed.
    pub(crate) fn run(&mut self) {
        self.state.shared.enter();
        loop {
            let timeout = self.state.poll_timeout();
            let state = &mut self.state;
            if let Err(e) = self.driver.poll(timeout, |c| state.on_completion(c)) {
                log::error!("ringmill: loop {}: poll failed: {e}", state.shared.index());
                if e.kind() != io::ErrorKind::Interrupted {
                    // A driver that cannot poll cannot make progress; close what can be
                    // closed and leave, rather than spin.
                    self.state.stopping = true;
                    self.abandon();
                    break;
                }
            }
            self.state.now = self.state.shared.clock().now();
            self.turn();
            self.state
                .shared
                .publish_counters(&self.driver.counters(), self.state.live);
            self.state
                .shared
                .publish_timer_entries(self.state.timers.len());
            if self.state.stopping && self.state.live == 0 && self.state.listeners.is_empty() {
                break;
            }
        }
        self.state
            .shared
            .publish_counters(&self.driver.counters(), self.state.live);
        // Whatever reached the inbox after the last turn is dropped here (closing sockets,
        // failing listen acknowledgements).
        let leftovers = self.state.shared.close_inbox();
        for command in leftovers {
            self.state.refuse(command);
        }
        LoopShared::leave();
    }

    /// Everything after a poll: accepts, commands, timers, driver ops, flushes.
    fn turn(&mut self) {
        for (listener, stream, peer) in std::mem::take(&mut self.state.accepted) {
            self.open_accepted(listener, stream, peer);
        }
        let mut commands = std::mem::take(&mut self.state.commands);
        self.state.shared.drain(&mut commands);
        for command in commands.drain(..) {
            self.command(command);
        }
        self.state.commands = commands;
        while let Some(timer) = self.state.timers.pop_due(self.state.now) {
            self.state.timer(timer);
        }
        self.apply_ops();
        self.flush();
        // Flushing can finish a drain (nothing left to write) and queue closes.
        self.apply_ops();
        self.ack_stops();
    }

    /// Answers the `TcpServer::stop` callers whose service has no connection left here.
    fn ack_stops(&mut self) {
        if self.state.stop_acks.is_empty() {
            return;
        }
        let conns = &self.state.conns;
        self.state.stop_acks.retain(|(service, ack)| {
            let left = conns
                .iter()
                .flatten()
                .any(|c| Arc::ptr_eq(&c.service, service));
            if !left {
                let _ = ack.send(());
            }
            left
        });
    }

    fn apply_ops(&mut self) {
        for op in std::mem::take(&mut self.state.ops) {
            match op {
                Op::Recv(slot) => self.driver.recv(slot),
                Op::PauseRecv(slot) => self.driver.pause_recv(slot),
                Op::ShutdownWrite(slot) => self.driver.shutdown_write(slot),
                Op::Close(slot) => self.driver.close(slot),
                Op::Discard(slot) => {
                    self.write_now(slot);
                    self.driver.close(slot);
                }
                Op::ResumeAccept(id) => self.driver.resume_accept(id),
            }
        }
    }

    fn flush(&mut self) {
        let mut list = std::mem::take(&mut self.state.flush);
        let mut failed = Vec::new();
        for &slot in &list {
            let Some(conn) = self.state.conns[slot.index()].as_mut() else {
                continue;
            };
            conn.in_flush_list = false;
            if conn.in_flight || !matches!(conn.phase, Phase::Open | Phase::Draining) {
                continue;
            }
            if let Err(e) = refill_sending(conn) {
                failed.push((slot, e));
            }
            if conn.sent == conn.sending.len() {
                continue;
            }
            let bufs = [IoSlice::new(&conn.sending[conn.sent..])];
            conn.in_flight = true;
            // SAFETY: `conn.sending` is owned by this connection's entry, which stays in
            // `conns` until the driver reports `Closed` for the slot; its heap memory does
            // not move when `conns` grows, and nothing writes to or reallocates it while
            // `in_flight` is set (only `Sent` clears it, and `flush` skips in-flight
            // connections). At most one send is in flight per slot (`in_flight`).
            unsafe { self.driver.send(slot, &bufs) };
        }
        list.clear();
        for (slot, e) in failed {
            // A layer failed to encode: what it encoded before is on its way; close after.
            self.state.layer_failed(slot, e, CloseMode::Flush);
        }
        // Keep the allocation, unless a failed layer queued more.
        if self.state.flush.is_empty() {
            self.state.flush = list;
        }
    }

    /// One last send of what is queued, just before a discarding close: what the socket
    /// takes at once is written, the driver's close cancels the rest.
    fn write_now(&mut self, slot: Slot) {
        let Some(conn) = self.state.conns[slot.index()].as_mut() else {
            return;
        };
        if conn.in_flight {
            return;
        }
        // An encoding failure here only loses what was being dropped anyway.
        let _ = refill_sending(conn);
        if conn.sent == conn.sending.len() {
            return;
        }
        let bufs = [IoSlice::new(&conn.sending[conn.sent..])];
        conn.in_flight = true;
        // SAFETY: as in `flush`: `conn.sending` stays in the connection's entry, unmoved
        // and unwritten, until the driver reports `Sent` or `Closed` for the slot, and no
        // other send is in flight on it (`in_flight` was clear).
        unsafe { self.driver.send(slot, &bufs) };
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Flush(shared) => {
                if let Some(slot) = self.state.slot_of(&shared) {
                    self.state.schedule_flush(slot);
                }
            }
            Command::Close(shared, mode) => {
                if let Some(slot) = self.state.slot_of(&shared) {
                    self.state.begin_close(slot, mode);
                }
            }
            Command::Pause(shared) => {
                if let Some(slot) = self.state.slot_of(&shared) {
                    self.state.pause(slot);
                }
            }
            Command::Resume(shared) => {
                if let Some(slot) = self.state.slot_of(&shared) {
                    self.state.resume(slot);
                }
            }
            Command::Listen {
                service,
                listener,
                ack,
            } => {
                let result = if self.state.stopping || service.is_stopped() {
                    Err(io::Error::other("event loop is stopping"))
                } else {
                    self.listen(Arc::clone(&service), listener)
                };
                if let Err(std::sync::mpsc::SendError(Err(e))) = ack.send(result) {
                    // Nobody waits (the server was started on a held loop): the server
                    // hears of it here.
                    if !self.state.stopping && !service.is_stopped() {
                        log::error!("ringmill: a loop could not take a listener: {e}");
                        let ctx = ServerContext::new(Arc::clone(&service));
                        callback::call_quiet(|| {
                            service
                                .handler
                                .on_error(&ctx, None, NetworkError::Io(e.into()))
                        });
                    }
                }
            }
            Command::StopService { service, ack } => {
                self.stop_service(&service);
                // Answered once its last connection here is gone (see `ack_stops`).
                self.state.stop_acks.push((service, ack));
            }
            Command::Connect {
                service,
                conn,
                socket,
                addr,
                timeout,
                layers,
                refused,
            } => {
                if !self.state.stopping && !conn.is_closed() {
                    // Before the connect: the connection goes on without those options.
                    let ctx = ServerContext::new(Arc::clone(&service));
                    for error in refused {
                        callback::call_quiet(|| {
                            service.handler.on_error(&ctx, Some(conn.id), error)
                        });
                    }
                }
                self.connect(service, conn, socket, addr, timeout, layers)
            }
            Command::Post(task) => {
                let ok = callback::call_task("posted closure", task);
                self.state.shared.count_task_run(!ok);
            }
            Command::Timer(timer) => self.state.timers.add_user(timer, &self.state.shared),
            Command::Stop => self.stop(),
        }
    }

    fn listen(&mut self, service: Arc<Service>, listener: TcpListener) -> io::Result<()> {
        let id = ListenerId(self.state.next_listener);
        self.state.next_listener += 1;
        self.driver.listen(id, listener)?;
        let ctx = ServerContext::new(Arc::clone(&service));
        self.state.listeners.insert(
            id,
            Listener {
                service,
                ctx,
                paused: false,
            },
        );
        Ok(())
    }

    fn stop_service(&mut self, service: &Arc<Service>) {
        let ids: Vec<ListenerId> = self
            .state
            .listeners
            .iter()
            .filter(|(_, l)| Arc::ptr_eq(&l.service, service))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.state.listeners.remove(&id);
            self.driver.unlisten(id);
        }
        for index in 0..self.state.conns.len() {
            let ours =
                matches!(&self.state.conns[index], Some(c) if Arc::ptr_eq(&c.service, service));
            if ours {
                if let Some(conn) = self.state.conns[index].as_mut() {
                    conn.linger = false;
                }
                self.state.begin_close(Slot(index as u64), CloseMode::Flush);
            }
        }
    }

    fn stop(&mut self) {
        if self.state.stopping {
            return;
        }
        self.state.stopping = true;
        for (id, _) in std::mem::take(&mut self.state.listeners) {
            self.driver.unlisten(id);
        }
        // The deadline counts from now: the turn's clock was read before this turn's
        // work, which can be long under load, and would end the stop early.
        self.state.now = self.state.shared.clock().now();
        let deadline = deadline_after(self.state.now, self.state.settings.stop_timeout);
        self.state.timers.add(deadline, TimerKind::Stop);
        for index in 0..self.state.conns.len() {
            if self.state.conns[index].is_some() {
                self.state.begin_close(Slot(index as u64), CloseMode::Flush);
            }
        }
    }

    /// The driver failed for good: report every connection closed without its help.
    fn abandon(&mut self) {
        for index in 0..self.state.conns.len() {
            if self.state.conns[index].is_some() {
                self.state.finish_close(Slot(index as u64));
            }
        }
        for (id, _) in std::mem::take(&mut self.state.listeners) {
            self.driver.unlisten(id);
        }
    }

    fn open_accepted(&mut self, listener: ListenerId, stream: TcpStream, peer: SocketAddr) {
        let Some(l) = self.state.listeners.get(&listener) else {
            return; // Unlistened meanwhile: dropping the stream closes it.
        };
        let service = Arc::clone(&l.service);
        if self.state.stopping || service.is_stopped() {
            return;
        }
        let ticket = match service.admit(peer, self.state.now) {
            Ok(ticket) => ticket,
            Err(error) => {
                drop(stream);
                let ctx = l.ctx.clone();
                callback::call_quiet(|| service.handler.on_error(&ctx, None, error));
                return;
            }
        };
        let option_errors = apply_socket_options(&stream, &service);
        let layers = match build_layers(&service) {
            Ok(layers) => layers,
            Err(error) => {
                drop(stream);
                service.release();
                service.release_place(ticket);
                let ctx = ServerContext::new(Arc::clone(&service));
                callback::call_quiet(|| service.handler.on_error(&ctx, None, error));
                return;
            }
        };
        let id = ConnectionId::next();
        if !option_errors.is_empty() {
            let ctx = ServerContext::new(Arc::clone(&service));
            for error in option_errors {
                callback::call_quiet(|| service.handler.on_error(&ctx, Some(id), error));
            }
        }
        let shared = ConnShared::new(id, service.config.marks, Arc::clone(&service.stats));
        shared.set_peer(peer);
        if layers.is_some() {
            shared.set_layered();
        }
        let slot = self.state.alloc();
        shared.attach(&self.state.shared, slot);
        if let Err(e) = self.driver.register(slot, stream) {
            self.state.free_slot(slot);
            service.release();
            service.release_place(ticket);
            let ctx = ServerContext::new(Arc::clone(&service));
            callback::call_quiet(|| {
                service
                    .handler
                    .on_error(&ctx, None, NetworkError::Accept(e.into()))
            });
            return;
        }
        service.conns.insert(id, Arc::clone(&shared));
        let ctx = ServerContext::new(Arc::clone(&service));
        let conn = Conn::new(shared, service, ctx, Phase::Open, peer, self.state.now);
        self.state.insert(
            slot,
            Conn {
                ticket,
                layers: layers.map(|layers| Layered::new(layers, false)),
                ..conn
            },
        );
        self.state.establish(slot);
    }

    fn connect(
        &mut self,
        service: Arc<Service>,
        shared: Arc<ConnShared>,
        socket: socket2::Socket,
        addr: SocketAddr,
        timeout: Duration,
        layers: Vec<Box<dyn Layer>>,
    ) {
        let ctx = ServerContext::new(Arc::clone(&service));
        if self.state.stopping {
            shared.lock().closed = true;
            service.conns.remove(shared.id);
            callback::call_quiet(|| {
                service
                    .handler
                    .on_error(&ctx, Some(shared.id), NetworkError::EventLoopGone)
            });
            shared.set_finished();
            return;
        }
        shared.set_peer(addr);
        // A client made from a stream that is connected already is registered as it is
        // and established at once (its layers' handshakes still run, under the timeout).
        let connected = socket.peer_addr().is_ok();
        let slot = self.state.alloc();
        {
            // Checked and attached under the queue's lock, which `request_close` takes to
            // mark the connection closed before it looks for an owner to tell: a close
            // either is seen here, or finds the owner and reaches this loop.
            let q = shared.lock();
            if q.closed {
                drop(q);
                // Disconnected before it was started.
                self.state.free_slot(slot);
                service.conns.remove(shared.id);
                shared.set_finished();
                return;
            }
            shared.attach(&self.state.shared, slot);
        }
        let taken = if connected {
            self.driver.register(slot, socket.into())
        } else {
            self.driver.connect(slot, socket, addr)
        };
        if let Err(e) = taken {
            self.state.free_slot(slot);
            shared.lock().closed = true;
            service.conns.remove(shared.id);
            callback::call_quiet(|| {
                service
                    .handler
                    .on_error(&ctx, Some(shared.id), NetworkError::Connect(e.into()))
            });
            shared.set_finished();
            return;
        }
        let id = shared.id;
        let mut conn = Conn::new(
            shared,
            service,
            ctx,
            Phase::Connecting,
            addr,
            self.state.now,
        );
        if !layers.is_empty() {
            conn.layers = Some(Layered::new(layers, true));
        }
        self.state.insert(slot, conn);
        self.state.timers.add(
            deadline_after(self.state.now, timeout),
            TimerKind::Connect(slot, id),
        );
        if connected {
            self.state.on_connected(slot, Ok(()));
        }
    }
}

/// Once everything in `conn.sending` was written, moves what is queued into it (encoding
/// it first, with layers). Returns a layer's encoding error, after which what it encoded
/// before is still in `sending`.
fn refill_sending(conn: &mut Conn) -> io::Result<()> {
    if conn.sent < conn.sending.len() {
        return Ok(());
    }
    conn.sending.clear();
    conn.sent = 0;
    if conn.layers.is_some() {
        return layered::refill(conn);
    }
    let mut q = conn.shared.lock();
    q.scheduled = false;
    if !q.pending.is_empty() {
        std::mem::swap(&mut q.pending, &mut conn.sending);
    }
    Ok(())
}

/// Builds an accepted connection's layers (`None` for a service without layers). A
/// factory that panics refuses the connection.
fn build_layers(service: &Service) -> Result<Option<Vec<Box<dyn Layer>>>, NetworkError> {
    let Some(factories) = service.layer_factories() else {
        return Ok(None);
    };
    let mut layers = Vec::with_capacity(factories.len());
    match callback::call(|| {
        layers.extend(factories.iter().map(|factory| factory()));
        Ok(())
    }) {
        Outcome::Ok => Ok(Some(layers)),
        Outcome::Failed(msg) | Outcome::Panicked(msg) => {
            Err(NetworkError::HandlerPanic(format!("layer factory: {msg}")))
        }
    }
}

/// Applies the service's socket options to an accepted socket; what the system refused,
/// as `Configuration` errors for `on_error` (the connection goes on without the option,
/// as mill-net's does).
fn apply_socket_options(stream: &TcpStream, service: &Service) -> Vec<NetworkError> {
    let sock = socket2::SockRef::from(stream);
    let opts = service.config.socket;
    let mut errors = Vec::new();
    let refused = |option: &'static str, e: io::Error| {
        NetworkError::Configuration(ConfigError::Rejected {
            option,
            reason: format!("the system refused it on an accepted socket: {e}"),
        })
    };
    if let Err(e) = sock.set_tcp_nodelay(opts.no_delay) {
        errors.push(refused("TCP_NODELAY", e));
    }
    if let Some(idle) = opts.keep_alive {
        let keepalive = socket2::TcpKeepalive::new().with_time(idle);
        if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
            errors.push(refused("SO_KEEPALIVE", e));
        }
    }
    errors
}

/// Accept errors that concern one connection only: skip it and go on accepting.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::InvalidInput
    )
}

impl State {
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ops.is_empty()
            || !self.flush.is_empty()
            || !self.accepted.is_empty()
            || self.shared.has_local_work()
        {
            return Some(Duration::ZERO);
        }
        self.timers.next_in(self.shared.clock().now())
    }

    fn alloc(&mut self) -> Slot {
        match self.free.pop() {
            Some(s) => Slot(u64::from(s)),
            None => {
                self.conns.push(None);
                Slot((self.conns.len() - 1) as u64)
            }
        }
    }

    fn insert(&mut self, slot: Slot, conn: Conn) {
        self.conns[slot.index()] = Some(conn);
        self.live += 1;
    }

    fn free_slot(&mut self, slot: Slot) {
        self.conns[slot.index()] = None;
        self.free.push(slot.index() as u32);
    }

    /// The slot of a connection this loop owns, if it is still here.
    fn slot_of(&self, shared: &Arc<ConnShared>) -> Option<Slot> {
        let slot = shared.slot()?;
        match self.conns.get(slot.index()) {
            Some(Some(c)) if c.shared.id == shared.id => Some(slot),
            _ => None,
        }
    }

    fn schedule_flush(&mut self, slot: Slot) {
        if let Some(conn) = self.conns[slot.index()].as_mut() {
            if !conn.in_flush_list {
                conn.in_flush_list = true;
                self.flush.push(slot);
            }
        }
    }

    /// `on_connect`, then start receiving and flushing whatever was queued before.
    fn establish(&mut self, slot: Slot) {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if conn.layers.is_some() {
            // `on_connect` waits for the layers' handshakes.
            self.open_layered(slot);
            return;
        }
        conn.established = true;
        conn.phase = Phase::Open;
        let id = conn.id();
        let service = Arc::clone(&conn.service);
        let outcome = announce_connect(conn);
        if !self.after_callback(slot, outcome) {
            return;
        }
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        if let Some(idle) = service.config.idle_timeout {
            self.timers
                .add(deadline_after(self.now, idle), TimerKind::Idle(slot, id));
        }
        if !conn.shared.lock().pending.is_empty() {
            self.schedule_flush(slot);
        }
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if !conn.shared.read_paused() {
            conn.receiving = true;
            self.ops.push(Op::Recv(slot));
        }
    }

    /// Acts on a callback's outcome; returns whether the connection is still open.
    fn after_callback(&mut self, slot: Slot, outcome: Outcome) -> bool {
        let (error, mode, stat) = match outcome {
            Outcome::Ok => return true,
            Outcome::Failed(msg) => (
                NetworkError::HandlerError(msg),
                CloseMode::Flush,
                Stat::HandlerError,
            ),
            Outcome::Panicked(msg) => (
                NetworkError::HandlerPanic(msg),
                CloseMode::Abort,
                Stat::HandlerPanic,
            ),
        };
        if let Some(conn) = self.conns[slot.index()].as_ref() {
            conn.service.count(stat, 1);
        }
        self.report(slot, error);
        self.begin_close(slot, mode);
        false
    }

    fn report(&self, slot: Slot, error: NetworkError) {
        if let Some(conn) = self.conns[slot.index()].as_ref() {
            let id = conn.id();
            callback::call_quiet(|| conn.service.handler.on_error(&conn.ctx, Some(id), error));
        }
    }

    fn on_completion(&mut self, completion: Completion<'_>) -> Flow {
        match completion {
            Completion::Received { slot, result } => self.on_received(slot, result),
            Completion::Sent { slot, result } => {
                self.on_sent(slot, result);
                Flow::Continue
            }
            Completion::Accepted { listener, result } => self.on_accepted(listener, result),
            Completion::Connected { slot, result } => {
                self.on_connected(slot, result);
                Flow::Continue
            }
            Completion::Closed { slot } => {
                self.finish_close(slot);
                Flow::Continue
            }
        }
    }

    fn on_accepted(
        &mut self,
        listener: ListenerId,
        result: io::Result<(TcpStream, SocketAddr)>,
    ) -> Flow {
        match result {
            Ok((stream, peer)) => {
                // A successful accept ends an episode of resource errors. This is done
                // here, in completion order, and not when the stream is opened later in
                // the turn: an error that followed it in the same poll would otherwise be
                // forgotten and reported again on the next retry.
                self.accept_backoff = ACCEPT_BACKOFF_MIN;
                self.accept_error_reported = false;
                self.accepted.push((listener, stream, peer));
                Flow::Continue
            }
            Err(e) if is_per_connection(&e) => {
                log::debug!("ringmill: accept: skipped: {e}");
                Flow::Continue
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning, and try
                // again later (or as soon as one of our connections closes).
                let Some(l) = self.listeners.get_mut(&listener) else {
                    return Flow::Pause;
                };
                l.paused = true;
                let backoff = self.accept_backoff;
                self.accept_backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                self.timers.add(
                    self.shared.clock().now() + backoff,
                    TimerKind::ResumeAccept(listener),
                );
                if !self.accept_error_reported {
                    self.accept_error_reported = true;
                    log::warn!("ringmill: accept failed, backing off: {e}");
                    let (service, ctx) = (&l.service, &l.ctx);
                    callback::call_quiet(|| {
                        service
                            .handler
                            .on_error(ctx, None, NetworkError::Accept(e.into()))
                    });
                }
                Flow::Pause
            }
        }
    }

    fn resume_accepting(&mut self, id: ListenerId) {
        if let Some(l) = self.listeners.get_mut(&id) {
            if l.paused {
                l.paused = false;
                self.ops.push(Op::ResumeAccept(id));
            }
        }
    }

    fn on_connected(&mut self, slot: Slot, result: io::Result<()>) {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if conn.phase != Phase::Connecting {
            return;
        }
        match result {
            Ok(()) => {
                // A layered client counts as connected once its handshakes are done.
                if conn.layers.is_none() {
                    conn.service.try_admit();
                    conn.counted = true;
                }
                self.establish(slot);
            }
            Err(e) => {
                conn.shared.lock().closed = true;
                conn.phase = Phase::Closing;
                self.report(slot, NetworkError::Connect(e.into()));
                self.ops.push(Op::Close(slot));
            }
        }
    }

    fn on_received(&mut self, slot: Slot, result: io::Result<&[u8]>) -> Flow {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return Flow::Pause;
        };
        if conn.phase == Phase::Lingering {
            return self.on_lingering_received(slot, result);
        }
        if conn.phase != Phase::Open {
            // Draining or closing: nothing more is delivered.
            return Flow::Pause;
        }
        match result {
            Ok([]) => {
                conn.read_done = true;
                conn.receiving = false;
                if self.handshaking(slot) {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed during the layer handshake",
                    );
                    self.peer_left_handshake(slot, e, CloseMode::Flush);
                    return Flow::Pause;
                }
                let ended = self.conns[slot.index()]
                    .as_mut()
                    .and_then(|c| c.layers.as_mut())
                    .map(|l| l.end_of_stream());
                if let Some(Err(e)) = ended {
                    self.end_of_stream_refused(slot, e);
                }
                self.begin_close(slot, CloseMode::Flush);
                Flow::Pause
            }
            Err(e) => {
                conn.read_done = true;
                conn.receiving = false;
                if self.handshaking(slot) {
                    self.peer_left_handshake(slot, e, CloseMode::Abort);
                    return Flow::Pause;
                }
                // A reset is reported too (mill-net's `Io(ConnectionReset)`), before the
                // `on_disconnect` that follows.
                self.report(slot, NetworkError::Io(e.into()));
                self.begin_close(slot, CloseMode::Abort);
                Flow::Pause
            }
            Ok(data) => {
                // Not `self.now`: that was taken before the poll, which may have slept
                // for as long as the idle timeout itself before these bytes came.
                conn.last_active = self.shared.clock().now();
                conn.service.count(Stat::BytesIn, data.len() as u64);
                if conn.layers.is_some() {
                    return self.receive_layered(slot, data);
                }
                self.deliver(slot, data)
            }
        }
    }

    /// Hands `data` to `on_data` in chunks of at most the service's `buffer_size`.
    fn deliver(&mut self, slot: Slot, data: &[u8]) -> Flow {
        let mut rest = data;
        while !rest.is_empty() {
            let Some(conn) = self.conns[slot.index()].as_mut() else {
                return Flow::Pause;
            };
            let n = rest.len().min(conn.service.config.chunk);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let id = conn.id();
            let outcome = callback::call(|| conn.service.handler.on_data(&conn.ctx, id, chunk));
            if self.after_on_data(slot, outcome, rest) == Flow::Pause {
                return Flow::Pause;
            }
        }
        Flow::Continue
    }

    /// Settles an `on_data` call and says whether delivery may go on. A failed or
    /// panicked handler is reported and its connection closed (see `after_callback`);
    /// once the connection is closing nothing more is delivered; once reads are paused,
    /// receiving stops and `rest`, the bytes not yet delivered, waits in the stash.
    fn after_on_data(&mut self, slot: Slot, outcome: Outcome, rest: &[u8]) -> Flow {
        if !self.after_callback(slot, outcome) {
            return Flow::Pause;
        }
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return Flow::Pause;
        };
        if conn.phase != Phase::Open || conn.shared.is_closed() {
            // Closed from the callback: nothing more is delivered.
            return Flow::Pause;
        }
        if conn.shared.read_paused() {
            conn.stash.extend_from_slice(rest);
            conn.receiving = false;
            return Flow::Pause;
        }
        Flow::Continue
    }

    fn pause(&mut self, slot: Slot) {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if conn.receiving && conn.shared.read_paused() {
            conn.receiving = false;
            self.ops.push(Op::PauseRecv(slot));
        }
    }

    fn resume(&mut self, slot: Slot) {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if conn.phase != Phase::Open || conn.read_done || conn.receiving {
            return;
        }
        if conn.shared.read_paused() {
            return; // Paused again since.
        }
        if conn.layers.is_some() && self.deliver_layered(slot) == Flow::Pause {
            return;
        }
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if !conn.stash.is_empty() {
            let stash = std::mem::take(&mut conn.stash);
            if self.deliver(slot, &stash) == Flow::Pause {
                return;
            }
        }
        if let Some(conn) = self.conns[slot.index()].as_mut() {
            if conn.phase == Phase::Open && !conn.receiving {
                conn.receiving = true;
                self.ops.push(Op::Recv(slot));
            }
        }
    }

    fn on_sent(&mut self, slot: Slot, result: io::Result<usize>) {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        conn.in_flight = false;
        let n = match result {
            Ok(n) => n,
            Err(e) => {
                if conn.phase == Phase::Closing {
                    return;
                }
                // Reported even when the peer went away (a reset, a broken pipe), as
                // mill-net does: before `on_disconnect`, which follows.
                self.report(slot, NetworkError::Io(e.into()));
                self.begin_close(slot, CloseMode::Abort);
                return;
            }
        };
        conn.sent += n;
        conn.service.count(Stat::BytesOut, n as u64);
        let (drained, empty, more) = {
            let mut q = conn.shared.lock();
            q.queued -= n;
            let drained = q.refused && q.queued <= conn.shared.marks.low;
            if drained {
                q.refused = false;
            }
            (drained, q.queued == 0, !q.pending.is_empty())
        };
        let more = more || conn.layers.as_ref().is_some_and(|l| !l.wire.is_empty());
        if conn.sent == conn.sending.len() {
            conn.sending.clear();
            conn.sent = 0;
            if conn.sending.capacity() > KEEP_SEND_CAPACITY {
                conn.sending = Vec::new();
            }
        }
        let unsent = conn.sent < conn.sending.len();
        let phase = conn.phase;
        let established = conn.established;
        if unsent || more {
            self.schedule_flush(slot);
        }
        match phase {
            // Before `on_connect` (a layer handshake), the handler hears nothing.
            Phase::Open if !established => {}
            Phase::Open => {
                let conn = self.conns[slot.index()].as_ref().expect("checked above");
                let (id, service) = (conn.id(), Arc::clone(&conn.service));
                if drained {
                    let outcome = callback::call(|| service.handler.on_drained(&conn.ctx, id));
                    if !self.after_callback(slot, outcome) {
                        return;
                    }
                }
                if empty {
                    let Some(conn) = self.conns[slot.index()].as_ref() else {
                        return;
                    };
                    let outcome = callback::call(|| service.handler.on_writable(&conn.ctx, id));
                    self.after_callback(slot, outcome);
                }
            }
            Phase::Draining if empty => self.drained(slot, None),
            _ => {}
        }
    }

    /// Everything queued for a gracefully closing connection is written: shut the write
    /// side down and read on until the peer's end of stream, then close (see
    /// [`Phase::Lingering`]). If the peer's end of stream came already, or a stop does not
    /// wait for peers, close at once. `deadline` adds the linger timer when none runs yet
    /// (nothing had to be drained).
    fn drained(&mut self, slot: Slot, deadline: Option<Instant>) {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if conn.read_done || !conn.linger || self.stopping {
            conn.phase = Phase::Closing;
            self.ops.push(Op::Close(slot));
            return;
        }
        conn.phase = Phase::Lingering;
        self.ops.push(Op::ShutdownWrite(slot));
        if !conn.receiving {
            conn.receiving = true;
            self.ops.push(Op::Recv(slot));
        }
        if let Some(deadline) = deadline {
            let id = conn.id();
            self.timers.add(deadline, TimerKind::Linger(slot, id));
        }
    }

    /// Input that arrives after the write side was shut down: dropped, until the end of
    /// stream (or an error) lets the connection close.
    fn on_lingering_received(&mut self, slot: Slot, result: io::Result<&[u8]>) -> Flow {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return Flow::Pause;
        };
        match result {
            Ok(data) if !data.is_empty() => {
                conn.service.count(Stat::BytesIn, data.len() as u64);
                Flow::Continue
            }
            _ => {
                conn.read_done = true;
                conn.receiving = false;
                conn.phase = Phase::Closing;
                self.ops.push(Op::Close(slot));
                Flow::Pause
            }
        }
    }

    /// Starts closing: refuse new frames; `Flush` writes what is queued first (up to the
    /// linger deadline), `Abort` drops it.
    fn begin_close(&mut self, slot: Slot, mut mode: CloseMode) {
        // During a stop, the stop timeout bounds the drain (its own timer aborts whatever
        // is left); otherwise the close linger does.
        let linger = if self.stopping {
            self.settings.stop_timeout
        } else {
            self.settings.linger
        };
        let now = self.now;
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        let queued = {
            let mut q = conn.shared.lock();
            q.closed = true;
            q.queued
        };
        match conn.phase {
            Phase::Closing => return,
            Phase::Connecting => {
                conn.phase = Phase::Closing;
                self.ops.push(Op::Close(slot));
                return;
            }
            Phase::Draining if mode == CloseMode::Flush => return,
            // A discarding close of a connection that is already lingering (all written):
            // close it now.
            // A stop does not wait for peers: a lingering connection closes now.
            Phase::Lingering if mode == CloseMode::Flush && conn.linger && !self.stopping => return,
            Phase::Open | Phase::Draining | Phase::Lingering => {}
        }
        if conn.receiving {
            conn.receiving = false;
            self.ops.push(Op::PauseRecv(slot));
        }
        conn.stash = Vec::new();
        let mut queued = queued;
        if mode != CloseMode::Abort && conn.layers.is_some() && conn.phase == Phase::Open {
            // Encode what is queued and let the layers say goodbye (TLS close_notify); a
            // discarding close sends that too, if the socket takes it at once.
            let (now_queued, error) = layered::seal(conn);
            queued = now_queued;
            if let Some(e) = error {
                mode = self.seal_failed(slot, e, mode);
            }
        }
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if mode == CloseMode::Discard {
            conn.phase = Phase::Closing;
            self.ops.push(Op::Discard(slot));
            return;
        }
        if mode == CloseMode::Abort {
            conn.phase = Phase::Closing;
            self.ops.push(Op::Close(slot));
        } else if queued == 0 && !conn.in_flight {
            self.drained(slot, Some(deadline_after(now, linger)));
        } else {
            conn.phase = Phase::Draining;
            let id = conn.id();
            self.timers
                .add(deadline_after(now, linger), TimerKind::Linger(slot, id));
            self.schedule_flush(slot);
        }
    }

    /// The driver let go of the connection (or is gone): forget it, then `on_disconnect`.
    fn finish_close(&mut self, slot: Slot) {
        let Some(conn) = self.conns[slot.index()].take() else {
            return;
        };
        self.free.push(slot.index() as u32);
        self.live -= 1;
        let id = conn.id();
        conn.shared.lock().closed = true;
        conn.service.conns.remove(id);
        if conn.counted {
            conn.service.release();
        }
        if conn.established {
            let service = &conn.service;
            match callback::call(|| service.handler.on_disconnect(&conn.ctx, id)) {
                Outcome::Ok => {}
                Outcome::Failed(msg) => {
                    service.count(Stat::HandlerError, 1);
                    log::debug!("ringmill: on_disconnect of {id} failed: {msg}");
                }
                Outcome::Panicked(msg) => {
                    service.count(Stat::HandlerPanic, 1);
                    log::debug!("ringmill: on_disconnect of {id} panicked: {msg}");
                }
            }
            let _ = callback::call(|| {
                service
                    .handler
                    .on_event(&conn.ctx, NetworkEvent::ConnectionClosed(id))
            });
        }
        conn.shared.set_finished();
        // The place under `max_connections` is given back only now: until its
        // `on_disconnect` has returned the connection is alive as far as the handler can
        // tell, and another loop must not admit a replacement meanwhile.
        if conn.counted {
            conn.service.release_place(conn.ticket);
        }
        self.forget_timers_of_closed();
        // A descriptor was freed: listeners backing off after EMFILE may try again.
        let paused: Vec<ListenerId> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.paused)
            .map(|(id, _)| *id)
            .collect();
        for id in paused {
            self.resume_accepting(id);
        }
    }

    fn timer(&mut self, timer: TimerKind) {
        match timer {
            TimerKind::Connect(slot, id) => {
                // The connect timeout covers the layers' handshakes too.
                if self.is(slot, id, Phase::Open) && self.handshaking(slot) {
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connect timed out during the layer handshake",
                    );
                    self.report(slot, NetworkError::Connect(e.into()));
                    self.begin_close(slot, CloseMode::Abort);
                } else if self.is(slot, id, Phase::Connecting) {
                    self.report(
                        slot,
                        NetworkError::Connect(
                            io::Error::new(io::ErrorKind::TimedOut, "connect timed out").into(),
                        ),
                    );
                    if let Some(conn) = self.conns[slot.index()].as_mut() {
                        conn.shared.lock().closed = true;
                        conn.phase = Phase::Closing;
                        self.ops.push(Op::Close(slot));
                    }
                }
            }
            TimerKind::Idle(slot, id) => {
                if !self.is(slot, id, Phase::Open) {
                    return;
                }
                let conn = self.conns[slot.index()].as_ref().expect("checked by is()");
                let Some(idle) = conn.service.config.idle_timeout else {
                    return;
                };
                let due = deadline_after(conn.last_active, idle);
                if due <= self.now {
                    conn.service.count(Stat::IdleTimeout, 1);
                    self.report(slot, NetworkError::IdleTimeout(id));
                    self.begin_close(slot, CloseMode::Flush);
                } else {
                    self.timers.add(due, TimerKind::Idle(slot, id));
                }
            }
            TimerKind::Linger(slot, id) => {
                if self.is(slot, id, Phase::Draining) || self.is(slot, id, Phase::Lingering) {
                    self.begin_close(slot, CloseMode::Abort);
                }
            }
            TimerKind::Handshake(slot, id) => self.handshake_expired(slot, id),
            TimerKind::ResumeAccept(listener) => self.resume_accepting(listener),
            TimerKind::User(timer) => self.timers.fire_user(timer, self.now, &self.shared),
            TimerKind::Stop => {
                for index in 0..self.conns.len() {
                    if self.conns[index].is_some() {
                        self.begin_close(Slot(index as u64), CloseMode::Abort);
                    }
                }
            }
        }
    }

    fn is(&self, slot: Slot, id: ConnectionId, phase: Phase) -> bool {
        matches!(self.conns.get(slot.index()), Some(Some(c)) if c.id() == id && c.phase == phase)
    }

    /// A command that arrived after the loop finished: undo what it asked for.
    fn refuse(&mut self, command: Command) {
        match command {
            Command::Listen { ack, .. } => {
                let _ = ack.send(Err(io::Error::other("event loop has stopped")));
            }
            Command::StopService { ack, .. } => {
                let _ = ack.send(());
            }
            Command::Connect { service, conn, .. } => {
                conn.lock().closed = true;
                service.conns.remove(conn.id);
                let ctx = ServerContext::new(Arc::clone(&service));
                callback::call_quiet(|| {
                    service
                        .handler
                        .on_error(&ctx, Some(conn.id), NetworkError::EventLoopGone)
                });
                conn.set_finished();
            }
            Command::Close(conn, _) => conn.set_finished(),
            Command::Flush(conn) | Command::Pause(conn) | Command::Resume(conn) => {
                conn.lock().closed = true;
            }
            // Dropping a timer marks it done; a posted closure is dropped unrun.
            Command::Post(_) | Command::Timer(_) | Command::Stop => {}
        }
    }
}
