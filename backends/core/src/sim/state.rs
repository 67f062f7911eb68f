//! What the simulated driver holds: its slots and listeners, what is ready, and which of
//! the contract's freedoms it takes.

use crate::driver::{ListenerId, Slot};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

/// One slot the driver holds, from `register`/`connect` until it reports `Closed`.
pub(super) struct SlotState {
    /// A connect in progress, reported not before this instant.
    pub(super) connecting: Option<Instant>,
    /// The core asked for `Received` (and did not pause since).
    pub(super) receiving: bool,
    /// End of stream or an error was reported: no more `Received`, ever.
    pub(super) recv_done: bool,
    /// A `Received` comes not before this instant (a slow network).
    pub(super) recv_after: Instant,
    /// The send in flight.
    pub(super) send: Option<InFlight>,
    /// Sends refused because one was in flight (a broken call): each gets a failed
    /// `Sent`, and the one in flight completes as if alone.
    pub(super) refused: u32,
    /// `shutdown_write` was called.
    pub(super) write_shut: bool,
    /// `close` was called: `Closed` is reported not before this instant.
    pub(super) closing: Option<Instant>,
}

/// A send in flight: where the core's bytes are, and a copy to check they stay unchanged.
pub(super) struct InFlight {
    pub(super) bufs: Vec<(*const u8, usize)>,
    pub(super) copy: Vec<u8>,
    pub(super) after: Instant,
}

pub(super) struct ListenerState {
    pub(super) paused: bool,
    /// A connection taken from the wire while an error was reported in its place.
    pub(super) held: Option<(TcpStream, SocketAddr)>,
}

#[derive(Clone, Copy)]
pub(super) enum Ready {
    Closed(Slot),
    Connected(Slot),
    Sent(Slot),
    Refused(Slot),
    Received(Slot),
    Accepted(ListenerId),
}

/// Which of the contract's freedoms the driver takes.
#[derive(Debug, Clone, Copy)]
pub struct Chaos {
    /// Report `EMFILE` and `ECONNABORTED` before some accepts (the connection waits for
    /// the next one). The conformance suite's helpers take every `Accepted` for a
    /// connection, so it runs without.
    pub accept_errors: bool,
    /// Make some sends short (the kernel taking fewer bytes than it could). The
    /// conformance suite reads a short `Sent` as "the socket is full" and a small send as
    /// taken whole, so it runs without.
    pub short_sends: bool,
    /// The most bytes one `Received` carries (a driver's receive buffer size).
    pub max_read: usize,
}

impl Default for Chaos {
    fn default() -> Self {
        Chaos {
            accept_errors: true,
            short_sends: true,
            max_read: 64 * 1024,
        }
    }
}
