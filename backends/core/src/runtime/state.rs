//! Everything of a loop but its driver: its connections (by slot), listeners, timers,
//! the driver work and flushes queued during a turn; and the completions' entry point.

use super::command::Command;
use super::phase::Conn;
use super::settings::LoopSettings;
use super::shared::LoopShared;
use super::timer::Timers;
use crate::conn::ConnShared;
use crate::context::ServerContext;
use crate::driver::{Completion, Flow, ListenerId, Slot};
use crate::service::Service;
use crate::slots::SlotTable;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First and longest pause after a resource error while accepting.
pub(super) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
pub(super) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listening socket of a service, on this loop.
pub(super) struct Listener {
    pub(super) service: Arc<Service>,
    pub(super) ctx: ServerContext,
    /// Backing off after a resource error.
    pub(super) paused: bool,
}

/// Driver work queued while the driver was busy delivering completions.
pub(super) enum Op {
    Recv(Slot),
    PauseRecv(Slot),
    ShutdownWrite(Slot),
    Close(Slot),
    /// Write what the socket takes at once of what is queued, then close (`CloseMode::Discard`).
    Discard(Slot),
    ResumeAccept(ListenerId),
}

/// Everything of a loop but its driver, so completions can update it while the driver is
/// borrowed by `poll`.
pub(crate) struct State {
    pub(super) shared: Arc<LoopShared>,
    pub(super) settings: LoopSettings,
    /// The connections, by slot: the core's one slot table type, which the drivers use
    /// too; a slot's generation tells a late completion for an earlier use of its index.
    pub(super) conns: SlotTable<Conn>,
    /// Ordered by id, so whatever walks them does so in the same order on every run.
    pub(super) listeners: BTreeMap<ListenerId, Listener>,
    pub(super) next_listener: u32,
    pub(super) timers: Timers,
    pub(super) ops: Vec<Op>,
    pub(super) flush: Vec<Slot>,
    pub(super) accepted: Vec<(ListenerId, TcpStream, SocketAddr)>,
    pub(super) commands: Vec<Command>,
    /// The flushes asked for on this thread, taken each turn (see `take_local_flushes`).
    pub(super) local_flushes: Vec<Arc<ConnShared>>,
    pub(super) now: Instant,
    pub(super) stopping: bool,
    pub(super) accept_backoff: Duration,
    pub(super) accept_error_reported: bool,
    /// `TcpServer::stop` callers waiting until none of their service's connections is
    /// left on this loop (each `on_disconnect` delivered).
    pub(super) stop_acks: Vec<(Arc<Service>, SyncSender<()>)>,
    /// The ranges of a delivery written through (see `write_through`), kept for reuse.
    pub(super) through: Vec<(usize, usize)>,
}

impl State {
    pub(super) fn new(shared: Arc<LoopShared>, settings: LoopSettings) -> Self {
        let now = shared.clock().now();
        State {
            shared,
            settings,
            conns: SlotTable::new(),
            listeners: BTreeMap::new(),
            next_listener: 0,
            timers: Timers::default(),
            ops: Vec::new(),
            flush: Vec::new(),
            accepted: Vec::new(),
            commands: Vec::new(),
            local_flushes: Vec::new(),
            now,
            stopping: false,
            accept_backoff: ACCEPT_BACKOFF_MIN,
            accept_error_reported: false,
            stop_acks: Vec::new(),
            through: Vec::new(),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Duration> {
        if !self.ops.is_empty()
            || !self.flush.is_empty()
            || !self.accepted.is_empty()
            || self.shared.has_local_work()
            || LoopShared::has_local_flushes()
        {
            return Some(Duration::ZERO);
        }
        self.timers.next_in(self.shared.clock().now())
    }

    pub(super) fn on_completion(&mut self, completion: Completion<'_>) -> Flow {
        match completion {
            Completion::Received {
                slot,
                result,
                direct,
            } => match self.driver_slot(slot) {
                Some(slot) => self.on_received(slot, result, direct),
                None => Flow::Pause,
            },
            Completion::Sent { slot, result } => {
                if let Some(slot) = self.driver_slot(slot) {
                    self.on_sent(slot, result);
                }
                Flow::Continue
            }
            Completion::Accepted { listener, result } => self.on_accepted(listener, result),
            Completion::Connected { slot, result } => {
                if let Some(slot) = self.driver_slot(slot) {
                    self.on_connected(slot, result);
                }
                Flow::Continue
            }
            Completion::Closed { slot } => {
                if let Some(slot) = self.driver_slot(slot) {
                    self.finish_close(slot);
                }
                Flow::Continue
            }
        }
    }

    /// The connection a driver's completion is about, if it is still the one at `slot`:
    /// a completion for an earlier use of the index (another generation) reaches nobody.
    fn driver_slot(&self, slot: Slot) -> Option<Slot> {
        self.conns.contains(slot).then_some(slot)
    }

    /// The slot the next connection will take, reserved until [`insert`](Self::insert)
    /// (nothing else takes a slot meanwhile: the driver's `register` or `connect` comes
    /// between).
    pub(super) fn next_slot(&mut self) -> Slot {
        self.conns.next_slot()
    }

    pub(super) fn insert(&mut self, slot: Slot, conn: Conn) {
        if self.conns.insert(slot, conn).is_err() {
            unreachable!("slot {slot} was reserved for this connection");
        }
    }

    /// The slot of a connection this loop owns, if it is still here.
    pub(super) fn slot_of(&self, shared: &Arc<ConnShared>) -> Option<Slot> {
        let slot = shared.slot()?;
        match self.conns.get(slot) {
            Some(c) if c.shared.id == shared.id => Some(slot),
            _ => None,
        }
    }
}
