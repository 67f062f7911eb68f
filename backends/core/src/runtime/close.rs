//! The close protocol (docs/ARCHITECTURE.md, "Close protocol"): refuse new frames, drain
//! what is queued (graceful), linger until the peer's end of stream, let the driver close,
//! and on its `Closed` forget the connection and call `on_disconnect`.

use super::callback::{self, Outcome};
use super::phase::Phase;
use super::state::{Op, State};
use super::timer::{deadline_after, TimerKind};
use crate::conn::CloseMode;
use crate::driver::{Flow, ListenerId, Slot};
use crate::error::NetworkEvent;
use crate::metrics::Stat;
use std::io;
use std::time::Instant;

impl State {
    /// Starts closing: refuse new frames; `Flush` writes what is queued first (up to the
    /// linger deadline), `Discard` writes what the socket takes at once, `Abort` drops it.
    pub(super) fn begin_close(&mut self, slot: Slot, mut mode: CloseMode) {
        // During a stop, the stop timeout bounds the drain (its own timer aborts whatever
        // is left); otherwise the close linger does.
        let linger = if self.stopping {
            self.settings.stop_timeout
        } else {
            self.settings.linger
        };
        let now = self.now;
        let Some(conn) = self.conns.get_mut(slot) else {
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
        conn.inbound.clear();
        let mut queued = queued;
        if mode != CloseMode::Abort && conn.phase == Phase::Open {
            // Encode what is queued and let the layers say goodbye (TLS close_notify); a
            // discarding close sends that too, if the socket takes it at once.
            if let Some((now_queued, error)) = conn.stack.seal(&conn.shared) {
                queued = now_queued;
                if let Some(e) = error {
                    mode = self.seal_failed(slot, e, mode);
                }
            }
        }
        let Some(conn) = self.conns.get_mut(slot) else {
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

    /// Everything queued for a gracefully closing connection is written: shut the write
    /// side down and read on until the peer's end of stream, then close (see
    /// [`Phase::Lingering`]). If the peer's end of stream came already, or a stop does not
    /// wait for peers, close at once. `deadline` adds the linger timer when none runs yet
    /// (nothing had to be drained).
    pub(super) fn drained(&mut self, slot: Slot, deadline: Option<Instant>) {
        let Some(conn) = self.conns.get_mut(slot) else {
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
    pub(super) fn on_lingering_received(&mut self, slot: Slot, result: io::Result<&[u8]>) -> Flow {
        let Some(conn) = self.conns.get_mut(slot) else {
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

    /// The driver let go of the connection (or is gone): forget it, then `on_disconnect`.
    pub(super) fn finish_close(&mut self, slot: Slot) {
        let Some(conn) = self.conns.remove(slot) else {
            return;
        };
        let id = conn.id();
        conn.shared.lock().closed = true;
        conn.service.conns.remove(id);
        if conn.established {
            let service = &conn.service;
            service.while_disconnecting(|| {
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
            });
        }
        // It stops counting only now, so that `connection_count()` reaching 0 means every
        // `on_disconnect` has returned.
        if conn.counted {
            conn.service.release();
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
}
