//! Per-slot state: the connection's descriptor, its operations in flight and the storage
//! they point to.

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
    /// `close` was called: only `Closed` may be reported from now on.
    pub closing: bool,
    /// Receive side.
    pub recv: RecvState,
    /// Storage of the send in flight.
    pub send: Box<SendBuf>,
    /// A send is in flight.
    pub sending: bool,
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
            sending: false,
            connect_addr: None,
        }
    }

    /// The raw descriptor.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Operations the kernel matches by descriptor: the receive, the send and the connect.
    pub(crate) fn fd_ops(&self) -> u32 {
        u32::from(self.recv.armed)
            + u32::from(self.sending)
            + u32::from(self.connect_addr.is_some())
    }
}

/// One entry of the slot table: the slot's current generation and its connection.
#[derive(Default)]
pub(crate) struct SlotEntry {
    /// Generation of the current (or next) use of the slot; part of every `user_data`.
    pub gen: u32,
    /// The connection, while the driver owns the slot.
    pub conn: Option<Conn>,
    /// Send storage of the previous connection, reused by the next.
    pub spare_send: Option<Box<SendBuf>>,
}
