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
    pub(super) conns: Vec<Option<Conn>>,
    pub(super) free: Vec<u32>,
    pub(super) live: usize,
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
}

/// The slots holding a connection now, in slot order.
pub(super) fn conn_slots(conns: &[Option<Conn>]) -> Vec<Slot> {
    (0..conns.len())
        .filter(|&i| conns[i].is_some())
        .map(|i| Slot(i as u64))
        .collect()
}

impl State {
    pub(super) fn new(shared: Arc<LoopShared>, settings: LoopSettings) -> Self {
        let now = shared.clock().now();
        State {
            shared,
            settings,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
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
            Completion::Received { slot, result } => self.on_received(slot, result),
            Completion::Sent { slot, result } => {
                self.on_sent(slot, result);
                Flow::Continue
            }
            Completion::Accepted { listener, result } => self.on_accepted(listener, result),
            Completion::Connected { slot, result } => {
                self.on_connected(slot, result);
                Flow::Continue
            }
            Completion::Closed { slot } => {
                self.finish_close(slot);
                Flow::Continue
            }
        }
    }

    pub(super) fn alloc(&mut self) -> Slot {
        match self.free.pop() {
            Some(s) => Slot(u64::from(s)),
            None => {
                self.conns.push(None);
                Slot((self.conns.len() - 1) as u64)
            }
        }
    }

    pub(super) fn insert(&mut self, slot: Slot, conn: Conn) {
        self.conns[slot.index()] = Some(conn);
        self.live += 1;
    }

    pub(super) fn free_slot(&mut self, slot: Slot) {
        self.conns[slot.index()] = None;
        self.free.push(slot.index() as u32);
    }

    /// The slot of a connection this loop owns, if it is still here.
    pub(super) fn slot_of(&self, shared: &Arc<ConnShared>) -> Option<Slot> {
        let slot = shared.slot()?;
        match self.conns.get(slot.index()) {
            Some(Some(c)) if c.shared.id == shared.id => Some(slot),
            _ => None,
        }
    }
}
