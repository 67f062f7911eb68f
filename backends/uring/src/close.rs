//! Closing: `shutdown_write`, and `close`, which cancels every operation of the connection,
//! waits for each of their completions, closes the descriptor and then reports one
//! `Closed`.

use crate::conn::lookup;
use crate::driver::UringDriver;
use crate::recv::Stashed;
use crate::user_data::{Kind, UserData};
use io_uring::types::CancelBuilder;
use io_uring::{opcode, types};
use ringmill_core::driver::{Completion, Flow, Slot};

impl UringDriver {
    /// `Driver::shutdown_write`.
    pub(crate) fn shut_write(&mut self, slot: Slot) {
        let Some(conn) = self.slots.get_mut(slot) else {
            return;
        };
        if conn.closing {
            return;
        }
        if conn.send_in_flight {
            log::error!("io_uring: shutdown_write on slot {slot} with a send in flight");
        }
        // A direct syscall: it never blocks, and nothing waits for its outcome.
        if let Err(err) = socket2::SockRef::from(&conn.fd).shutdown(std::net::Shutdown::Write) {
            log::debug!("io_uring: shutdown(SHUT_WR) of slot {slot}: {err}");
        }
    }

    /// `Driver::close`: cancels everything of the connection; `Closed` follows once the
    /// kernel let go.
    pub(crate) fn start_close(&mut self, slot: Slot) {
        let Some(conn) = self.slots.get_mut(slot) else {
            log::debug!("io_uring: close of slot {slot}, which the driver does not own: ignored");
            return;
        };
        if conn.closing {
            return;
        }
        conn.closing = true;
        conn.recv.delivering = false;
        for item in conn.recv.stash.drain(..) {
            if let Stashed::Data { bid, .. } = item {
                self.bufs.recycle(bid);
            }
        }
        if conn.inflight == 0 {
            self.finish_close(slot);
            self.closed.push(slot);
            return;
        }
        conn.inflight += 1;
        let sqe = opcode::AsyncCancel2::new(CancelBuilder::fd(types::Fd(conn.raw_fd())).all())
            .build()
            .user_data(UserData::of(slot, Kind::Cancel).encode());
        // SAFETY: a cancel by descriptor points to no memory; the descriptor stays open
        // until this cancel's own completion is reaped.
        unsafe { self.ring.push(sqe) };
    }

    /// The completion of a cancel aimed at a connection: a paused receive's, or the close's.
    pub(crate) fn on_cancel<F>(&mut self, ud: UserData, res: i32, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let Some((slot, conn)) = lookup(&mut self.slots, ud) else {
            log::debug!("io_uring: stale cancel completion for slot {}", ud.index);
            return false;
        };
        conn.inflight -= 1;
        if !conn.closing {
            return false;
        }
        if conn.inflight > 0 {
            // The close's cancel found fewer operations than are still out: make sure
            // the rest end too (a receive sees end of stream, a send or connect fails).
            let outstanding = conn.fd_ops();
            if res < outstanding as i32 {
                // SAFETY: plain syscall on a descriptor the connection owns.
                unsafe { libc::shutdown(conn.raw_fd(), libc::SHUT_RDWR) };
            }
        }
        self.maybe_closed(slot, sink)
    }

    /// Reports `Closed` for a closing slot once nothing of it is in flight.
    pub(crate) fn maybe_closed<F>(&mut self, slot: Slot, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let done = self
            .slots
            .get(slot)
            .is_some_and(|c| c.closing && c.inflight == 0);
        if done {
            self.finish_close(slot);
            sink(Completion::Closed { slot });
        }
        done
    }

    /// Drops the connection of `slot` (closing its descriptor) once nothing of it is in
    /// flight; the caller reports `Closed`.
    fn finish_close(&mut self, slot: Slot) {
        if let Some(conn) = self.slots.remove(slot) {
            debug_assert_eq!(conn.inflight, 0);
            debug_assert!(conn.recv.stash.is_empty());
            self.spare_sends.push(conn.send);
            // `conn.fd` is closed here, after the kernel let go of it.
        }
    }

    /// Reports `Closed` of the slots closed with nothing in flight.
    pub(crate) fn flush_closed<F>(&mut self, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = false;
        let mut closed = std::mem::take(&mut self.closed);
        for slot in closed.drain(..) {
            sink(Completion::Closed { slot });
            delivered = true;
        }
        closed.append(&mut self.closed);
        self.closed = closed;
        delivered
    }
}
