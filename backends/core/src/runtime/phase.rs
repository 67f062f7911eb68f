//! A connection's phases and the loop's record of it, and how it becomes established.
//!
//! Phases: `Connecting` (clients) → `Open` → `Draining` (graceful close: writing what is
//! queued, reading nothing) → `Lingering` (write side shut down, reading on until the
//! peer's end of stream) → `Closing` (the driver is closing it) → gone, after the driver's
//! `Closed`, which is when `on_disconnect` runs.
//!
//! An `Open` connection is *established* once every layer of its stack is ready, at once
//! for an empty stack: that is when `on_connect` runs and its queued frames start to go
//! out (`establish.rs`).

use super::inbound::Inbound;
use super::stack::Stack;
use crate::admission::Ticket;
use crate::conn::ConnShared;
use crate::context::ServerContext;
use crate::id::ConnectionId;
use crate::service::Service;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Connecting,
    Open,
    Draining,
    /// Everything queued was written and the write side is shut down: reading on (and
    /// discarding) until the peer's end of stream or the linger deadline, then closing.
    /// Closing a socket with unread input would reset the connection and drop the tail
    /// of what was sent.
    Lingering,
    Closing,
}

/// The loop's half of a connection.
pub(super) struct Conn {
    pub(super) shared: Arc<ConnShared>,
    pub(super) service: Arc<Service>,
    pub(super) ctx: ServerContext,
    pub(super) phase: Phase,
    /// `on_connect` ran, so `on_disconnect` is owed.
    pub(super) established: bool,
    /// Holds a place under the service's `max_connections`.
    pub(super) counted: bool,
    /// What admission took for this connection, given back with its place.
    pub(super) ticket: Ticket,
    /// End of stream or a read error was seen: no more receiving.
    pub(super) read_done: bool,
    /// A graceful close waits for the peer's end of stream (see [`Phase::Lingering`]);
    /// cleared when its server stops, which does not wait for peers.
    pub(super) linger: bool,
    /// The driver is delivering `Received` for this connection.
    pub(super) receiving: bool,
    /// Received pieces not yet delivered to the handler.
    pub(super) inbound: Inbound,
    /// The buffer handed to the driver's send (taken from the shared queue).
    pub(super) sending: Vec<u8>,
    /// How much of `sending` the kernel has taken.
    pub(super) sent: usize,
    pub(super) in_flight: bool,
    pub(super) in_flush_list: bool,
    pub(super) last_active: Instant,
    pub(super) peer: Option<SocketAddr>,
    /// The connection's layers; empty (no allocation) for plain TCP.
    pub(super) stack: Stack,
}

impl Conn {
    /// A connection entering `phase` (`Open` once accepted, `Connecting` for a client);
    /// an accepted one holds a place under `max_connections` (`counted`).
    pub(super) fn new(
        shared: Arc<ConnShared>,
        service: Arc<Service>,
        phase: Phase,
        peer: SocketAddr,
        now: Instant,
        stack: Stack,
    ) -> Self {
        let ctx = service.context();
        Self {
            shared,
            service,
            ctx,
            phase,
            established: false,
            counted: phase == Phase::Open,
            ticket: Ticket::Free,
            read_done: false,
            linger: true,
            receiving: false,
            inbound: Inbound::default(),
            sending: Vec::new(),
            sent: 0,
            in_flight: false,
            in_flush_list: false,
            last_active: now,
            peer: Some(peer),
            stack,
        }
    }

    pub(super) fn id(&self) -> ConnectionId {
        self.shared.id
    }
}
