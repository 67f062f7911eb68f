//! Receiving: one multishot receive per connection over the provided buffer ring,
//! re-armed when it ends (once buffers are back after `ENOBUFS`), paused by cancelling it
//! (completions that land before the cancel are stashed, copied out of the ring), and
//! delivered to the sink in stream order.

use crate::buf_ring::{BufRing, BGID};
use crate::conn::{lookup, Conn};
use crate::driver::UringDriver;
use crate::ring::Ring;
use crate::send::MAX_IOVECS;
use crate::user_data::{Kind, UserData};
use io_uring::types::CancelBuilder;
use io_uring::{cqueue, opcode, squeue, types};
use ringmill_core::driver::{Completion, Flow, Slot, WriteNow};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, RawFd};

/// A receive completion kept for later delivery, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stashed {
    /// `len` bytes in ring buffer `bid` (held out of the ring until delivered).
    Data {
        /// Buffer id.
        bid: u16,
        /// Bytes in it.
        len: u32,
    },
    /// Bytes copied out of a ring buffer, which went back to the ring: what arrived for a
    /// paused connection (see [`spill`]).
    Copied(Box<[u8]>),
    /// End of stream.
    Eof,
    /// The receive failed with this errno.
    Err(i32),
}

/// Where a connection's receive stands, as far as the kernel and the stash go.
#[derive(Debug, Default)]
pub(crate) struct RecvState {
    /// Completions go to the sink rather than to the stash: `recv` was called and neither
    /// `pause_recv` nor a `Pause` answer came since.
    pub delivering: bool,
    /// A multishot receive is in the kernel (its final completion has not been reaped).
    pub multishot_armed: bool,
    /// A cancel of the armed receive has been queued.
    pub cancel_queued: bool,
    /// The kernel reported end of stream or an error: the receive is never armed again.
    pub stream_ended: bool,
    /// The last receive ended with `ENOBUFS`; it is armed again once buffers are back.
    pub starved: bool,
    /// Completions not delivered yet, in order (while paused, or behind earlier ones).
    pub stash: VecDeque<Stashed>,
}

impl RecvState {
    /// Whether a new multishot receive should be armed now.
    pub(crate) fn should_arm(&self) -> bool {
        self.delivering && !self.multishot_armed && !self.stream_ended && !self.starved
    }
}

/// Copies every buffer-backed item of `stash` out of the ring and gives the buffer back:
/// a paused connection must not hold receive buffers, or a few of them could leave the
/// ring empty for every other connection of the loop. Memory per paused connection is
/// bounded by what the kernel delivered before the pause's cancel landed.
pub(crate) fn spill(stash: &mut VecDeque<Stashed>, bufs: &mut BufRing) {
    for item in stash.iter_mut() {
        if let Stashed::Data { bid, len } = *item {
            *item = Stashed::Copied(bufs.slice(bid, len as usize).into());
            bufs.recycle(bid);
        }
    }
}

/// A multishot receive on `fd` that picks buffers from the provided buffer ring.
pub(crate) fn recv_sqe(fd: RawFd, user_data: UserData) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(fd), BGID)
        .build()
        .user_data(user_data.encode())
}

impl UringDriver {
    /// `Driver::recv`: delivers the stash at the next poll and arms the receive.
    pub(crate) fn start_recv(&mut self, slot: Slot) {
        let Some(conn) = self.slots.get_mut(slot) else {
            return;
        };
        if conn.closing || conn.recv.delivering {
            return;
        }
        conn.recv.delivering = true;
        if !conn.recv.stash.is_empty() {
            self.flush.push(slot);
        }
        if conn.recv.should_arm() {
            arm_recv(&mut self.ring, slot, conn);
        }
    }

    /// `Driver::pause_recv`.
    pub(crate) fn stop_recv(&mut self, slot: Slot) {
        let Some(conn) = self.slots.get_mut(slot) else {
            return;
        };
        if conn.closing || !conn.recv.delivering {
            return;
        }
        pause(&mut self.ring, slot, conn);
    }

    /// A multishot receive completion.
    pub(crate) fn on_recv<F>(&mut self, ud: UserData, res: i32, flags: u32, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        if bid.is_some() {
            self.bufs.taken();
        }
        let min_write = write_now_min(self.slots.len());
        let Some((slot, conn)) = lookup(&mut self.slots, ud) else {
            log::debug!("io_uring: stale receive completion for slot {}", ud.index);
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return false;
        };
        if !more {
            conn.inflight -= 1;
            conn.recv.multishot_armed = false;
            conn.recv.cancel_queued = false;
        }
        if conn.closing {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return self.maybe_closed(slot, sink);
        }
        let item = if res > 0 {
            match bid {
                Some(bid) => Some(Stashed::Data {
                    bid,
                    len: res as u32,
                }),
                None => {
                    log::error!("io_uring: receive of {res} bytes without a buffer");
                    conn.recv.stream_ended = true;
                    Some(Stashed::Err(libc::EIO))
                }
            }
        } else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            match -res {
                0 => {
                    conn.recv.stream_ended = true;
                    Some(Stashed::Eof)
                }
                libc::ENOBUFS => {
                    self.enobufs += 1;
                    if !conn.recv.starved {
                        conn.recv.starved = true;
                        self.starved.push(slot);
                    }
                    None
                }
                libc::ECANCELED => None,
                errno => {
                    conn.recv.stream_ended = true;
                    Some(Stashed::Err(errno))
                }
            }
        };
        if let Some(item) = item {
            conn.recv.stash.push_back(item);
        }
        let delivered = drain_stash(&mut self.ring, &mut self.bufs, slot, conn, min_write, sink);
        if !more && conn.recv.should_arm() {
            arm_recv(&mut self.ring, slot, conn);
            self.rearms += 1;
        }
        delivered
    }

    /// Re-arms the receives that ran out of buffers, oldest first, at most one per buffer
    /// back in the ring: re-arming every starved receive at once would only earn most of
    /// them another `ENOBUFS` (a herd of useless completions per recycled buffer).
    pub(crate) fn feed_starved(&mut self) {
        let mut budget = self.bufs.in_ring();
        if self.starved.is_empty() || budget == 0 {
            return;
        }
        let mut fed = 0;
        while fed < self.starved.len() && budget > 0 {
            let slot = self.starved[fed];
            fed += 1;
            let Some(conn) = self.slots.get_mut(slot) else {
                continue;
            };
            if !conn.recv.starved || conn.closing {
                continue;
            }
            conn.recv.starved = false;
            if conn.recv.should_arm() {
                arm_recv(&mut self.ring, slot, conn);
                self.rearms += 1;
                budget -= 1;
            }
        }
        self.starved.drain(..fed);
    }

    /// Delivers the stashes of connections resumed since the last poll.
    pub(crate) fn flush_stashes<F>(&mut self, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = false;
        let mut flush = std::mem::take(&mut self.flush);
        let min_write = write_now_min(self.slots.len());
        for slot in flush.drain(..) {
            if let Some(conn) = self.slots.get_mut(slot) {
                if !conn.closing {
                    delivered |=
                        drain_stash(&mut self.ring, &mut self.bufs, slot, conn, min_write, sink);
                }
            }
        }
        flush.append(&mut self.flush);
        self.flush = flush;
        delivered
    }
}

/// Arms the multishot receive of `slot`.
fn arm_recv(ring: &mut Ring, slot: Slot, conn: &mut Conn) {
    debug_assert!(!conn.recv.multishot_armed);
    conn.recv.multishot_armed = true;
    conn.inflight += 1;
    let sqe = recv_sqe(conn.raw_fd(), UserData::of(slot, Kind::Recv));
    // SAFETY: the receive refers to the connection's descriptor, which stays open until
    // the connection's last completion (the connection is dropped only then), and to the
    // provided buffer ring, which outlives every operation (see `Drop`).
    unsafe { ring.push(sqe) };
}

/// Stops delivering for `slot`: cancels the armed receive, whose completions until the
/// cancel lands go to the stash.
fn pause(ring: &mut Ring, slot: Slot, conn: &mut Conn) {
    conn.recv.delivering = false;
    if conn.recv.multishot_armed && !conn.recv.cancel_queued {
        conn.recv.cancel_queued = true;
        conn.inflight += 1;
        let target = UserData::of(slot, Kind::Recv).encode();
        let sqe = opcode::AsyncCancel2::new(CancelBuilder::user_data(target))
            .build()
            .user_data(UserData::of(slot, Kind::Cancel).encode());
        // SAFETY: a cancel by user_data points to no memory.
        unsafe { ring.push(sqe) };
    }
}

/// A connection's socket as the core writes it during a `Received` (driver contract,
/// rule 8): one non-blocking `send(2)` or `sendmsg(2)` outside the ring. No operation of
/// the ring writes to the socket meanwhile (none is offered while a send is in flight), so
/// the stream's order holds; answering from the received buffer this way saves the copy
/// into the connection's queue, which costs more than the system call from a few KiB on.
///
/// Writes shorter than `min` bytes are declined (`Ok(0)`; see [`write_now_min`]).
struct WriteNowFd<'a> {
    fd: BorrowedFd<'a>,
    min: usize,
}

/// Writes shorter than this are declined while the loop holds more than one connection:
/// the core then copies them into the connection's queue and sends them with an SQE,
/// which for a few hundred bytes costs less than a system call of their own, and shares
/// one `io_uring_enter` with the other connections' sends and receives.
const WRITE_NOW_MIN: usize = 2048;

/// The shortest write a delivery takes through its `WriteNow` on a loop holding
/// `connections` connections. A lone connection has no other send or receive to share an
/// enter with: an SQE would cost the copy into the queue, a completion and a second
/// `io_uring_enter` per exchange (the enter that submits it returns at once with the
/// send's completion, since the peer cannot answer before it has read), so every write
/// goes through. With more connections, the enter that submits short answers mostly
/// brings other connections' receives back with it, which is what makes the batch pay;
/// that holds even when each receive arrives alone (a thread per connection on the
/// other side), so the count of connections decides, not the receives of one round.
fn write_now_min(connections: usize) -> usize {
    if connections <= 1 {
        0
    } else {
        WRITE_NOW_MIN
    }
}

/// A write through never blocks the loop and never raises `SIGPIPE`.
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;

impl WriteNow for WriteNowFd<'_> {
    fn write_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let bufs = &bufs[..bufs.len().min(MAX_IOVECS)];
        if bufs.iter().map(|b| b.len()).sum::<usize>() < self.min {
            return Ok(0);
        }
        let socket = socket2::SockRef::from(&self.fd);
        match ringmill_core::sock::send_some(&socket, bufs, SEND_FLAGS) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(0),
            result => result,
        }
    }
}

/// Delivers the stash of `slot` while the core wants it; returns whether anything was
/// delivered. Buffers go back to the ring as soon as the sink returns.
fn drain_stash<F>(
    ring: &mut Ring,
    bufs: &mut BufRing,
    slot: Slot,
    conn: &mut Conn,
    write_now_min: usize,
    sink: &mut F,
) -> bool
where
    F: FnMut(Completion<'_>) -> Flow,
{
    let mut delivered = false;
    while conn.recv.delivering {
        let Some(item) = conn.recv.stash.pop_front() else {
            break;
        };
        // Rule 8 of the driver contract: the socket may be written during the delivery
        // while no send of the core's is in flight.
        let mut now = WriteNowFd {
            fd: conn.fd.as_fd(),
            min: write_now_min,
        };
        let direct = if conn.send_in_flight {
            None
        } else {
            Some(&mut now as &mut dyn WriteNow)
        };
        let flow = match item {
            Stashed::Data { bid, len } => {
                let flow = sink(Completion::Received {
                    slot,
                    result: Ok(bufs.slice(bid, len as usize)),
                    direct,
                });
                bufs.recycle(bid);
                flow
            }
            Stashed::Copied(bytes) => sink(Completion::Received {
                slot,
                result: Ok(&bytes),
                direct,
            }),
            Stashed::Eof => sink(Completion::Received {
                slot,
                result: Ok(&[]),
                direct: None,
            }),
            Stashed::Err(errno) => sink(Completion::Received {
                slot,
                result: Err(io::Error::from_raw_os_error(errno)),
                direct: None,
            }),
        };
        delivered = true;
        if flow == Flow::Pause {
            pause(ring, slot, conn);
        }
    }
    if !conn.recv.delivering {
        spill(&mut conn.recv.stash, bufs);
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arming_rules() {
        let mut r = RecvState::default();
        assert!(!r.should_arm(), "nothing before recv()");
        r.delivering = true;
        assert!(r.should_arm());
        r.multishot_armed = true;
        assert!(!r.should_arm(), "one receive at a time");
        r.multishot_armed = false;
        r.starved = true;
        assert!(!r.should_arm(), "waits for buffers");
        r.starved = false;
        r.stream_ended = true;
        assert!(!r.should_arm(), "never after EOF");
    }

    #[test]
    fn a_lone_connection_writes_through_at_any_size() {
        assert_eq!(write_now_min(0), 0);
        assert_eq!(write_now_min(1), 0);
        assert_eq!(write_now_min(2), WRITE_NOW_MIN);
        assert_eq!(write_now_min(512), WRITE_NOW_MIN);
    }
}
