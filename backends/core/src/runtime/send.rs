//! Where a sent byte goes once it is queued: the loop's flush list, one send per
//! connection per turn through the connection's stack, `Sent`, and the watermarks
//! (`on_drained`, `on_writable`).
//!
//! Senders on any thread append frames to the connection's shared queue (`conn.rs`) and
//! put the connection on its loop's flush list (through the inbox, or straight onto it
//! from the loop's own thread). At the end of a turn the loop moves the queue into the
//! connection's `sending` buffer (an empty stack swaps it in without a copy; layers encode
//! it) and issues one send; only one send is in flight per connection.

use super::callback;
use super::phase::{Conn, Phase};
use super::state::State;
use super::worker::Worker;
use crate::conn::CloseMode;
use crate::driver::{Driver, Slot};
use crate::error::NetworkError;
use crate::metrics::Stat;
use std::io::{self, IoSlice};
use std::sync::Arc;

/// Send buffers larger than this are released when a connection's queue empties, so an
/// idle connection does not keep a burst's worth of memory.
const KEEP_SEND_CAPACITY: usize = 64 * 1024;

impl<D: Driver> Worker<D> {
    /// Issues one send for every connection on the flush list that has something to
    /// write and no send in flight.
    pub(super) fn flush(&mut self) {
        let mut list = std::mem::take(&mut self.state.flush);
        let mut failed = Vec::new();
        for &slot in &list {
            let Some(conn) = self.state.conns.get_mut(slot) else {
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
            // not move when the table grows, and nothing writes to or reallocates it while
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
    pub(super) fn write_now(&mut self, slot: Slot) {
        let Some(conn) = self.state.conns.get_mut(slot) else {
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
}

/// Once everything in `conn.sending` was written, moves what is queued into it, through
/// the connection's stack. Returns a layer's encoding error, after which what it encoded
/// before is still in `sending`.
fn refill_sending(conn: &mut Conn) -> io::Result<()> {
    if conn.sent < conn.sending.len() {
        return Ok(());
    }
    conn.sending.clear();
    conn.sent = 0;
    conn.stack.refill(&conn.shared, &mut conn.sending)
}

impl State {
    /// Puts `slot` on the flush list (once per turn).
    pub(super) fn schedule_flush(&mut self, slot: Slot) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if !conn.in_flush_list {
                conn.in_flush_list = true;
                self.flush.push(slot);
            }
        }
    }

    pub(super) fn on_sent(&mut self, slot: Slot, result: io::Result<usize>) {
        let Some(conn) = self.conns.get_mut(slot) else {
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
        if conn.sent == conn.sending.len() {
            conn.sending.clear();
            conn.sent = 0;
            if conn.sending.capacity() > KEEP_SEND_CAPACITY {
                conn.sending = Vec::new();
            }
        }
        self.wrote(slot, n);
    }

    /// `n` bytes of what was queued on `slot` reached the socket (reported by a `Sent`, or
    /// written through during a receive): the accounting, the next send, and the
    /// watermark callbacks.
    pub(super) fn wrote(&mut self, slot: Slot, n: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
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
        let more = more || conn.stack.has_wire();
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
                let conn = self.conns.get(slot).expect("checked above");
                let (id, service) = (conn.id(), Arc::clone(&conn.service));
                if drained {
                    let outcome = callback::call(|| service.handler.on_drained(&conn.ctx, id));
                    if !self.after_callback(slot, outcome) {
                        return;
                    }
                }
                if empty {
                    let Some(conn) = self.conns.get(slot) else {
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
}
