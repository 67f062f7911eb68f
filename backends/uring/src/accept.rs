//! Accepting: one multishot accept per listener, re-armed when it ends, paused by
//! cancelling it (accepts that land before the cancel are stashed), and `unlisten`.

use crate::driver::UringDriver;
use crate::ring::Ring;
use crate::user_data::{Kind, UserData};
use io_uring::types::CancelBuilder;
use io_uring::{cqueue, opcode, squeue, types};
use ringmill_core::driver::{Completion, Flow, ListenerId};
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What one accept completion reports.
pub(crate) type AcceptResult = io::Result<(TcpStream, SocketAddr)>;

/// A listening socket and its multishot accept.
pub(crate) struct Listener {
    /// The socket; closed when the entry is removed, after its last completion.
    pub sock: TcpListener,
    /// Operations of this listener whose final completion is not reaped yet.
    pub inflight: u32,
    /// A multishot accept is in flight.
    pub armed: bool,
    /// A cancel of the armed accept has been queued.
    pub cancelling: bool,
    /// The core wants `Accepted` (no `Flow::Pause` answer since the last resume).
    pub active: bool,
    /// `unlisten` was called: the entry goes once nothing is in flight.
    pub removed: bool,
    /// Accepts not delivered yet (while paused), in order.
    pub stash: VecDeque<AcceptResult>,
}

impl Listener {
    /// A listener that wants connections.
    pub(crate) fn new(sock: TcpListener) -> Self {
        Self {
            sock,
            inflight: 0,
            armed: false,
            cancelling: false,
            active: true,
            removed: false,
            stash: VecDeque::new(),
        }
    }

    /// The multishot accept for this listener; accepted sockets are non-blocking and
    /// close-on-exec.
    pub(crate) fn accept_sqe(&self, id: u32) -> squeue::Entry {
        opcode::AcceptMulti::new(types::Fd(self.sock.as_raw_fd()))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(UserData::new(id, 0, Kind::Accept).encode())
    }
}

/// Turns an accept completion's result into what the core is told; `None` for a
/// cancellation (the driver's own doing, nothing to report).
pub(crate) fn accepted(res: i32) -> Option<AcceptResult> {
    if res >= 0 {
        // SAFETY: a non-negative accept result is a new descriptor that the kernel just
        // installed for this process and that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(res) };
        let stream = TcpStream::from(fd);
        Some(match stream.peer_addr() {
            Ok(peer) => Ok((stream, peer)),
            // The peer is gone already (reset before we looked): delivered all the same,
            // as the mio driver delivers it, with the unspecified address of the socket's
            // family; its first read reports the reset (driver contract, rule 5).
            Err(e) => {
                log::debug!("io_uring: getpeername on an accepted socket failed: {e}");
                let unknown = match stream.local_addr() {
                    Ok(SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                };
                Ok((stream, SocketAddr::new(unknown, 0)))
            }
        })
    } else if res == -libc::ECANCELED {
        None
    } else {
        Some(Err(io::Error::from_raw_os_error(-res)))
    }
}

/// Closes the descriptor of an accept completion that no listener wants any more.
pub(crate) fn discard(res: i32) {
    if res >= 0 {
        // SAFETY: as in `accepted`: the descriptor is new and owned by nothing else; it is
        // closed right here.
        drop(unsafe { OwnedFd::from_raw_fd(res) });
    }
}

impl UringDriver {
    /// `Driver::listen`: records the listener and arms its accept.
    pub(crate) fn add_listener(&mut self, id: ListenerId, listener: TcpListener) -> io::Result<()> {
        if self.listeners.contains_key(&id.0) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("listener id {} is in use", id.0),
            ));
        }
        let l = self
            .listeners
            .entry(id.0)
            .or_insert(Listener::new(listener));
        arm_accept(&mut self.ring, id.0, l);
        Ok(())
    }

    /// `Driver::resume_accept`: delivers the stash at the next poll and re-arms.
    pub(crate) fn resume_listener(&mut self, id: ListenerId) {
        let Some(l) = self.listeners.get_mut(&id.0) else {
            return;
        };
        if l.removed || l.active {
            return;
        }
        l.active = true;
        if !l.stash.is_empty() {
            self.accept_flush.push(id.0);
        }
        if !l.armed {
            arm_accept(&mut self.ring, id.0, l);
            self.rearms += 1;
        }
    }

    /// `Driver::unlisten`: cancels the accept; the listener goes once nothing of it is in
    /// flight.
    pub(crate) fn remove_listener(&mut self, id: ListenerId) {
        let Some(l) = self.listeners.get_mut(&id.0) else {
            return;
        };
        if l.removed {
            return;
        }
        pause_accept(&mut self.ring, id.0, l);
        // The descriptor can only be closed once the accept's cancel completes, a poll or
        // more from now; until then the kernel would keep completing handshakes into a
        // queue nobody accepts from. Shutting a listening socket down takes it out of
        // LISTEN at once (Linux), so connects are refused from here on.
        if let Err(e) = socket2::SockRef::from(&l.sock).shutdown(std::net::Shutdown::Both) {
            log::debug!("ringmill: shutdown of listener {}: {e}", id.0);
        }
        l.removed = true;
        l.stash.clear();
        if l.inflight == 0 {
            self.listeners.remove(&id.0);
        }
    }

    /// A multishot accept completion.
    pub(crate) fn on_accept<F>(&mut self, id: u32, res: i32, flags: u32, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let more = cqueue::more(flags);
        let Some(l) = self.listeners.get_mut(&id) else {
            discard(res);
            return false;
        };
        if !more {
            l.inflight -= 1;
            l.armed = false;
            l.cancelling = false;
        }
        if l.removed {
            discard(res);
            if l.inflight == 0 {
                self.listeners.remove(&id);
            }
            return false;
        }
        if let Some(result) = accepted(res) {
            l.stash.push_back(result);
        }
        let delivered = drain_accepts(&mut self.ring, id, l, sink);
        if !more && l.active && !l.armed {
            arm_accept(&mut self.ring, id, l);
            self.rearms += 1;
        }
        delivered
    }

    /// The completion of a cancel aimed at listener `id`'s accept.
    pub(crate) fn on_accept_cancel(&mut self, id: u32) {
        if let Some(l) = self.listeners.get_mut(&id) {
            l.inflight -= 1;
            if l.removed && l.inflight == 0 {
                self.listeners.remove(&id);
            }
        }
    }

    /// Delivers the stashes of listeners resumed since the last poll.
    pub(crate) fn flush_accepts<F>(&mut self, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = false;
        let mut accept_flush = std::mem::take(&mut self.accept_flush);
        for id in accept_flush.drain(..) {
            if let Some(l) = self.listeners.get_mut(&id) {
                if !l.removed {
                    delivered |= drain_accepts(&mut self.ring, id, l, sink);
                }
            }
        }
        accept_flush.append(&mut self.accept_flush);
        self.accept_flush = accept_flush;
        delivered
    }
}

/// Arms the multishot accept of listener `id`.
fn arm_accept(ring: &mut Ring, id: u32, l: &mut Listener) {
    debug_assert!(!l.armed);
    l.armed = true;
    l.inflight += 1;
    let sqe = l.accept_sqe(id);
    // SAFETY: the accept refers only to the listening descriptor, which stays open
    // until the listener's last completion (the entry is removed only then).
    unsafe { ring.push(sqe) };
}

/// Stops accepting on `id` for now: cancels the armed accept; accepts that land before
/// the cancel go to the stash.
fn pause_accept(ring: &mut Ring, id: u32, l: &mut Listener) {
    l.active = false;
    if l.armed && !l.cancelling {
        l.cancelling = true;
        l.inflight += 1;
        let target = UserData::new(id, 0, Kind::Accept).encode();
        let sqe = opcode::AsyncCancel2::new(CancelBuilder::user_data(target))
            .build()
            .user_data(UserData::new(id, 0, Kind::AcceptCancel).encode());
        // SAFETY: a cancel by user_data points to no memory.
        unsafe { ring.push(sqe) };
    }
}

/// Delivers the accept stash of listener `id` while the core wants it.
fn drain_accepts<F>(ring: &mut Ring, id: u32, l: &mut Listener, sink: &mut F) -> bool
where
    F: FnMut(Completion<'_>) -> Flow,
{
    let mut delivered = false;
    while l.active {
        let Some(result) = l.stash.pop_front() else {
            break;
        };
        delivered = true;
        let flow = sink(Completion::Accepted {
            listener: ListenerId(id),
            result,
        });
        if flow == Flow::Pause {
            pause_accept(ring, id, l);
        }
    }
    delivered
}
