//! A connection's phases and the loop's record of it, and how it becomes established.
//!
//! Phases: `Connecting` (clients) → `Open` → `Draining` (graceful close: writing what is
//! queued, reading nothing) → `Lingering` (write side shut down, reading on until the
//! peer's end of stream) → `Closing` (the driver is closing it) → gone, after the driver's
//! `Closed`, which is when `on_disconnect` runs.
//!
//! An `Open` connection is *established* once every layer of its stack is ready, at once
//! for an empty stack: that is when `on_connect` runs and its queued frames start to go
//! out.

use super::callback::{self, Outcome};
use super::receive::Inbound;
use super::stack::Stack;
use super::timer::{deadline_after, TimerKind};
use super::worker::{Op, State};
use crate::admission::Ticket;
use crate::conn::{CloseMode, ConnShared};
use crate::context::ServerContext;
use crate::driver::Slot;
use crate::error::{NetworkError, NetworkEvent};
use crate::id::ConnectionId;
use crate::metrics::Stat;
use crate::service::Service;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
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
pub(super) struct Conn {
    pub(super) shared: Arc<ConnShared>,
    pub(super) service: Arc<Service>,
    pub(super) ctx: ServerContext,
    pub(super) phase: Phase,
    /// `on_connect` ran, so `on_disconnect` is owed.
    pub(super) established: bool,
    /// Holds a place under the service's `max_connections`.
    pub(super) counted: bool,
    /// What admission took for this connection, given back with its place.
    pub(super) ticket: Ticket,
    /// End of stream or a read error was seen: no more receiving.
    pub(super) read_done: bool,
    /// A graceful close waits for the peer's end of stream (see [`Phase::Lingering`]);
    /// cleared when its server stops, which does not wait for peers.
    pub(super) linger: bool,
    /// The driver is delivering `Received` for this connection.
    pub(super) receiving: bool,
    /// Received pieces not yet delivered to the handler.
    pub(super) inbound: Inbound,
    /// The buffer handed to the driver's send (taken from the shared queue).
    pub(super) sending: Vec<u8>,
    /// How much of `sending` the kernel has taken.
    pub(super) sent: usize,
    pub(super) in_flight: bool,
    pub(super) in_flush_list: bool,
    pub(super) last_active: Instant,
    pub(super) peer: Option<SocketAddr>,
    /// The connection's layers; empty (no allocation) for plain TCP.
    pub(super) stack: Stack,
}

impl Conn {
    /// A connection entering `phase` (`Open` once accepted, `Connecting` for a client);
    /// an accepted one holds a place under `max_connections` (`counted`).
    pub(super) fn new(
        shared: Arc<ConnShared>,
        service: Arc<Service>,
        phase: Phase,
        peer: SocketAddr,
        now: Instant,
        stack: Stack,
    ) -> Self {
        let ctx = ServerContext::new(Arc::clone(&service));
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
            inbound: Inbound::default(),
            sending: Vec::new(),
            sent: 0,
            in_flight: false,
            in_flush_list: false,
            last_active: now,
            peer: Some(peer),
            stack,
        }
    }

    pub(super) fn id(&self) -> ConnectionId {
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

impl State {
    /// TCP is up: the connection is open; its stack starts (an empty one is ready at once,
    /// and the connection is established here). A stack with a handshake to do starts
    /// reading at once; `on_connect` waits until every layer is ready.
    pub(super) fn open(&mut self, slot: Slot) {
        let now = self.now;
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        conn.phase = Phase::Open;
        let id = conn.id();
        // The idle timeout covers a handshake too, so a peer that never finishes it does
        // not hold the connection forever.
        if let Some(idle) = conn.service.config.idle_timeout {
            self.timers
                .add(deadline_after(now, idle), TimerKind::Idle(slot, id));
        }
        let step = conn.stack.start(&conn.shared);
        if step.wrote {
            self.schedule_flush(slot);
        }
        if let Err(e) = step.result {
            self.layer_failed(slot, e, CloseMode::Flush);
            return;
        }
        if step.ready {
            self.ready(slot);
            return;
        }
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        // The idle timeout alone does not bound a handshake: a peer that trickles one byte
        // at a time keeps it from firing. An accepted connection gets a deadline of its
        // own (a client's connect timeout covers its handshake).
        if let (false, Some(limit)) = (
            conn.stack.is_client(),
            conn.service.config.handshake_timeout,
        ) {
            self.timers
                .add(deadline_after(now, limit), TimerKind::Handshake(slot, id));
        }
        self.start_receiving(slot);
    }

    /// Every layer is ready (at once for an empty stack): `on_connect`, then the frames
    /// queued meanwhile go out and reading starts (or goes on).
    pub(super) fn ready(&mut self, slot: Slot) {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        if !conn.counted {
            // Only now is a client connected (`is_connected`, `connection_count`).
            conn.service.try_admit();
            conn.counted = true;
        }
        conn.established = true;
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
        if conn.stack.has_wire() || !conn.shared.lock().pending.is_empty() {
            self.schedule_flush(slot);
        }
        self.start_receiving(slot);
    }

    /// Starts reading an open connection, unless the user paused it or it reads already.
    pub(super) fn start_receiving(&mut self, slot: Slot) {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if conn.phase == Phase::Open
            && !conn.receiving
            && !conn.read_done
            && !conn.shared.read_paused()
        {
            conn.receiving = true;
            self.ops.push(Op::Recv(slot));
        }
    }

    /// Whether `slot` is open and its layers' handshake has not finished (`on_connect` has
    /// not run).
    pub(super) fn handshaking(&self, slot: Slot) -> bool {
        matches!(self.conns.get(slot.index()), Some(Some(c)) if c.phase == Phase::Open && !c.established)
    }

    /// Acts on a callback's outcome; returns whether the connection is still open.
    pub(super) fn after_callback(&mut self, slot: Slot, outcome: Outcome) -> bool {
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

    /// `on_error` for the connection at `slot`.
    pub(super) fn report(&self, slot: Slot, error: NetworkError) {
        if let Some(conn) = self.conns[slot.index()].as_ref() {
            let id = conn.id();
            callback::call_quiet(|| conn.service.handler.on_error(&conn.ctx, Some(id), error));
        }
    }

    /// Whether `slot` still holds connection `id`, in `phase`.
    pub(super) fn is(&self, slot: Slot, id: ConnectionId, phase: Phase) -> bool {
        matches!(self.conns.get(slot.index()), Some(Some(c)) if c.id() == id && c.phase == phase)
    }
}
