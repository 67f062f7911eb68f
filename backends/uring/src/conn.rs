//! Per-slot state: the connection's descriptor, its operations in flight and the storage
//! they point to. The slot table itself is the core's
//! [`SlotTable`](ringmill_core::slots::SlotTable), and the generation that tags each
//! operation is the core's too ([`Slot::generation`](ringmill_core::driver::Slot)).

use crate::recv::RecvState;
use crate::send::SendBuf;
use socket2::SockAddr;
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
