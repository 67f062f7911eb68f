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
//! The loop's state is in `state.rs`, a connection's phases and record in `phase.rs`.

use super::command::Command;
use super::settings::LoopSettings;
use super::shared::LoopShared;
use super::state::{Op, State};
use crate::driver::Driver;
use std::io;
use std::sync::Arc;

/// A loop thread's state and its driver.
pub(crate) struct Worker<D: Driver> {
    pub(super) driver: D,
    pub(super) state: State,
}

impl<D: Driver> Worker<D> {
    pub(crate) fn new(driver: D, shared: Arc<LoopShared>, settings: LoopSettings) -> Self {
        Self {
            driver,
            state: State::new(shared, settings),
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
                .publish_counters(&self.driver.counters(), self.state.conns.len());
            self.state
                .shared
                .publish_timer_entries(self.state.timers.len());
            if self.state.stopping && self.state.conns.is_empty() && self.state.listeners.is_empty()
            {
                break;
            }
        }
        self.state
            .shared
            .publish_counters(&self.driver.counters(), self.state.conns.len());
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
            let left = conns.iter().any(|(_, c)| Arc::ptr_eq(&c.service, service));
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
