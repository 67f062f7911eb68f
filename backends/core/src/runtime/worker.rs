//! One loop thread: its state, its driver, and its turn.
//!
//! Each iteration:
//!
//! 1. `poll` the driver; completions update connection state and run callbacks
//!    (`receive.rs`, `send.rs`, `accept.rs`, `connect.rs`, `close.rs`). Work that needs
//!    the driver (register, receive, close, resume) is queued as an [`Op`], since the
//!    driver is busy delivering completions.
//! 2. take the accepted streams and open their connections (`accept.rs`);
//! 3. run the commands other threads (and this one's callbacks) queued in the inbox
//!    (`command.rs`);
//! 4. fire due timers, the loop's own (`deadlines.rs`) and the user's;
//! 5. apply the queued ops, then flush (`send.rs`): every connection with queued output
//!    gets one send covering everything queued during the iteration.
//!
//! A connection's phases and record are in `phase.rs`.

use super::accept::{Listener, ACCEPT_BACKOFF_MIN};
use super::phase::Conn;
use super::timer::Timers;
use super::LoopSettings;
use crate::conn::ConnShared;
use crate::driver::{Completion, Driver, Flow, ListenerId, Slot};
use crate::inbox::{Command, LoopShared};
use crate::service::Service;
use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A loop thread's state and its driver.
pub(crate) struct Worker<D: Driver> {
    pub(super) driver: D,
    pub(super) state: State,
}

/// The slots holding a connection now, in slot order.
pub(super) fn conn_slots(conns: &[Option<Conn>]) -> Vec<Slot> {
    (0..conns.len())
        .filter(|&i| conns[i].is_some())
        .map(|i| Slot(i as u64))
        .collect()
}

impl<D: Driver> Worker<D> {
    pub(crate) fn new(driver: D, shared: Arc<LoopShared>, settings: LoopSettings) -> Self {
        let now = shared.clock().now();
        Self {
            driver,
            state: State {
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
            },
        }
    }

    /// The loop was stopped while held, before it ever ran: nothing is dispatched. What
    /// was queued is dropped: listeners closed, clients' connects abandoned (marked closed
    /// and finished, without a callback), timers and closures dropped unrun.
    pub(crate) fn never_ran(&mut self) {
        for command in self.state.shared.close_inbox() {
            match command {
                Command::Connect { service, conn, .. } => {
                    conn.lock().closed = true;
                    service.conns.remove(conn.id);
                    conn.set_finished();
                }
                other => self.state.refuse(other),
            }
        }
    }

    /// Runs until stopped and every connection is closed.
    pub(crate) fn run(&mut self) {
        self.state.shared.enter();
        loop {
            let timeout = self.state.poll_timeout();
            let state = &mut self.state;
            if let Err(e) = self.driver.poll(timeout, |c| state.on_completion(c)) {
                log::error!("ringmill: loop {}: poll failed: {e}", state.shared.index());
                if e.kind() != io::ErrorKind::Interrupted {
                    // A driver that cannot poll cannot make progress; close what can be
                    // closed and leave, rather than spin.
                    self.state.stopping = true;
                    self.abandon();
                    break;
                }
            }
            self.state.now = self.state.shared.clock().now();
            self.turn();
            self.state
                .shared
                .publish_counters(&self.driver.counters(), self.state.live);
            self.state
                .shared
                .publish_timer_entries(self.state.timers.len());
            if self.state.stopping && self.state.live == 0 && self.state.listeners.is_empty() {
                break;
            }
        }
        self.state
            .shared
            .publish_counters(&self.driver.counters(), self.state.live);
        // Whatever reached the inbox after the last turn is dropped here (closing sockets,
        // failing listen acknowledgements).
        let leftovers = self.state.shared.close_inbox();
        for command in leftovers {
            self.state.refuse(command);
        }
        LoopShared::leave();
    }

    /// Everything after a poll: accepts, commands, timers, driver ops, flushes.
    fn turn(&mut self) {
        for (listener, stream, peer) in std::mem::take(&mut self.state.accepted) {
            self.open_accepted(listener, stream, peer);
        }
        let mut commands = std::mem::take(&mut self.state.commands);
        self.state.shared.drain(&mut commands);
        for command in commands.drain(..) {
            self.command(command);
        }
        self.state.commands = commands;
        while let Some(timer) = self.state.timers.pop_due(self.state.now) {
            self.state.timer(timer);
        }
        self.apply_ops();
        self.take_local_flushes();
        self.flush();
        // Flushing can finish a drain (nothing left to write) and queue closes.
        self.apply_ops();
        self.ack_stops();
    }

    /// Puts the connections that sends on this thread asked to flush on the flush list
    /// (see [`LoopShared::push_flush`]).
    fn take_local_flushes(&mut self) {
        let mut local = std::mem::take(&mut self.state.local_flushes);
        LoopShared::take_local_flushes(&mut local);
        for conn in local.drain(..) {
            if let Some(slot) = self.state.slot_of(&conn) {
                self.state.schedule_flush(slot);
            }
        }
        self.state.local_flushes = local;
    }

    /// Answers the `TcpServer::stop` callers whose service has no connection left here.
    fn ack_stops(&mut self) {
        if self.state.stop_acks.is_empty() {
            return;
        }
        let conns = &self.state.conns;
        self.state.stop_acks.retain(|(service, ack)| {
            let left = conns
                .iter()
                .flatten()
                .any(|c| Arc::ptr_eq(&c.service, service));
            if !left {
                let _ = ack.send(());
            }
            left
        });
    }

    fn apply_ops(&mut self) {
        for op in std::mem::take(&mut self.state.ops) {
            match op {
                Op::Recv(slot) => self.driver.recv(slot),
                Op::PauseRecv(slot) => self.driver.pause_recv(slot),
                Op::ShutdownWrite(slot) => self.driver.shutdown_write(slot),
                Op::Close(slot) => self.driver.close(slot),
                Op::Discard(slot) => {
                    self.write_now(slot);
                    self.driver.close(slot);
                }
                Op::ResumeAccept(id) => self.driver.resume_accept(id),
            }
        }
    }
}

impl State {
    fn poll_timeout(&self) -> Option<Duration> {
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

    fn on_completion(&mut self, completion: Completion<'_>) -> Flow {
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
