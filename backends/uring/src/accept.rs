//! Multishot accept per listener.

use crate::user_data::{Kind, UserData};
use io_uring::{opcode, squeue, types};
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
