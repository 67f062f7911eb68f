//! How a connection becomes established (`on_connect`), and how a callback's outcome
//! (an error, a panic) closes it.

use super::callback::{self, Outcome};
use super::phase::{Conn, Phase};
use super::state::{Op, State};
use super::timer::{deadline_after, TimerKind};
use crate::conn::CloseMode;
use crate::driver::Slot;
use crate::error::{NetworkError, NetworkEvent};
use crate::id::ConnectionId;
use crate::metrics::Stat;

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
        let Some(conn) = self.conns.get_mut(slot) else {
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
        let Some(conn) = self.conns.get_mut(slot) else {
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
        let Some(conn) = self.conns.get_mut(slot) else {
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
        let Some(conn) = self.conns.get_mut(slot) else {
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
        let Some(conn) = self.conns.get_mut(slot) else {
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
        matches!(self.conns.get(slot), Some(c) if c.phase == Phase::Open && !c.established)
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
        if let Some(conn) = self.conns.get(slot) {
            conn.service.count(stat, 1);
        }
        self.report(slot, error);
        self.begin_close(slot, mode);
        false
    }

    /// `on_error` for the connection at `slot`.
    pub(super) fn report(&self, slot: Slot, error: NetworkError) {
        if let Some(conn) = self.conns.get(slot) {
            let id = conn.id();
            callback::call_quiet(|| conn.service.handler.on_error(&conn.ctx, Some(id), error));
        }
    }

    /// Whether `slot` still holds connection `id`, in `phase`.
    pub(super) fn is(&self, slot: Slot, id: ConnectionId, phase: Phase) -> bool {
        matches!(self.conns.get(slot), Some(c) if c.id() == id && c.phase == phase)
    }
}
