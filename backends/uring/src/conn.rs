//! Per-slot state: the connection's descriptor, its operations in flight and the storage
//! they point to; taking a socket over (`register`, `connect`). The slot table itself is
//! the core's [`SlotTable`], and the generation that tags each operation is the core's
//! too ([`Slot::generation`]).

use crate::driver::UringDriver;
use crate::recv::RecvState;
use crate::send::SendBuf;
use crate::user_data::{Kind, UserData};
use io_uring::{opcode, types};
use ringmill_core::driver::{Completion, Flow, Slot};
use ringmill_core::slots::SlotTable;
use socket2::SockAddr;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// One connection owned by the driver.
pub(crate) struct Conn {
    /// The socket; closed when the connection is dropped, after its last completion.
    pub fd: OwnedFd,
    /// Operations of this connection whose final completion is not reaped yet (receive,
    /// send, connect, cancels).
    pub inflight: u32,
    /// `close` was called and the kernel has not let go yet: only `Closed` may be
    /// reported from now on.
    pub closing: bool,
    /// Receive side.
    pub recv: RecvState,
    /// Storage of the send in flight.
    pub send: Box<SendBuf>,
    /// A SEND or SENDMSG is queued or in the kernel: its completion is not reaped yet.
    pub send_in_flight: bool,
    /// The address of the connect in flight, kept alive until its completion.
    pub connect_addr: Option<Box<SockAddr>>,
}

impl Conn {
    /// A connection on `fd`, reusing `send` storage if there is one.
    pub(crate) fn new(fd: OwnedFd, send: Option<Box<SendBuf>>) -> Self {
        Self {
            fd,
            inflight: 0,
            closing: false,
            recv: RecvState::default(),
            send: send.unwrap_or_else(SendBuf::new),
            send_in_flight: false,
            connect_addr: None,
        }
    }

    /// The raw descriptor.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Operations the kernel matches by descriptor: the receive, the send and the connect.
    pub(crate) fn fd_ops(&self) -> u32 {
        u32::from(self.recv.multishot_armed)
            + u32::from(self.send_in_flight)
            + u32::from(self.connect_addr.is_some())
    }
}

impl UringDriver {
    /// Takes `fd` over as the connection of `slot`, reusing spare send storage; fails if
    /// the slot's index is in use.
    pub(crate) fn adopt(&mut self, slot: Slot, fd: OwnedFd) -> io::Result<&mut Conn> {
        if self.slots.get_at(slot.index()).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("slot {} is in use", slot.index()),
            ));
        }
        let conn = Conn::new(fd, self.spare_sends.pop());
        if let Err(conn) = self.slots.insert(slot, conn) {
            self.spare_sends.push(conn.send);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slot index {} is out of range", slot.index()),
            ));
        }
        Ok(self.slots.get_mut(slot).expect("just inserted"))
    }

    /// `Driver::connect`: adopts the socket and issues the CONNECT.
    pub(crate) fn start_connect(
        &mut self,
        slot: Slot,
        socket: socket2::Socket,
        addr: SocketAddr,
    ) -> io::Result<()> {
        let conn = self.adopt(slot, OwnedFd::from(socket))?;
        let sa = Box::new(SockAddr::from(addr));
        let sqe = opcode::Connect::new(
            types::Fd(conn.raw_fd()),
            sa.as_ptr().cast::<libc::sockaddr>(),
            sa.len(),
        )
        .build()
        .user_data(UserData::of(slot, Kind::Connect).encode());
        conn.connect_addr = Some(sa);
        conn.inflight += 1;
        // SAFETY: the connect points to the boxed address, kept in `connect_addr` until the
        // connect's completion, and to the connection's descriptor, open until then.
        unsafe { self.ring.push(sqe) };
        Ok(())
    }

    /// A connect completion.
    pub(crate) fn on_connect<F>(&mut self, ud: UserData, res: i32, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let Some((slot, conn)) = lookup(&mut self.slots, ud) else {
            log::debug!("io_uring: stale connect completion for slot {}", ud.index);
            return false;
        };
        conn.inflight -= 1;
        conn.connect_addr = None;
        if conn.closing {
            return self.maybe_closed(slot, sink);
        }
        let result = if res >= 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(-res))
        };
        sink(Completion::Connected { slot, result });
        true
    }
}

/// The connection a completion's `user_data` names, unless the slot's index is vacant or
/// used by a later connection (another generation).
pub(crate) fn lookup(slots: &mut SlotTable<Conn>, ud: UserData) -> Option<(Slot, &mut Conn)> {
    slots
        .get_at_mut(ud.index as usize)
        .filter(|(slot, _)| ud.names(*slot))
}
