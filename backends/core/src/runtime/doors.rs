//! How the rest of the crate reaches a loop without depending on the runtime: a
//! connection through its [`Owner`], a [`LoopHandle`] through its [`LoopApi`], a timer
//! through its [`TimerOwner`]. [`LoopShared`] is each of them.

use super::command::Command;
use super::shared::LoopShared;
use super::timer::{TimerOwner, UserTimer};
use crate::clock::Clock;
use crate::conn::{CloseMode, ConnShared, Owner};
use crate::loop_handle::{LoopApi, LoopHandle};
use crate::metrics::LoopMetrics;
use std::sync::Arc;

impl Owner for LoopShared {
    fn flush(&self, conn: &Arc<ConnShared>) -> bool {
        self.push_flush(conn)
    }

    fn close(&self, conn: &Arc<ConnShared>, mode: CloseMode) -> bool {
        self.push(Command::Close(Arc::clone(conn), mode))
    }

    fn pause(&self, conn: &Arc<ConnShared>, paused: bool) {
        let conn = Arc::clone(conn);
        self.push(if paused {
            Command::Pause(conn)
        } else {
            Command::Resume(conn)
        });
    }

    fn handle(self: Arc<Self>) -> LoopHandle {
        LoopShared::handle(&self)
    }
}

impl LoopApi for LoopShared {
    fn index(&self) -> usize {
        LoopShared::index(self)
    }

    fn is_current(&self) -> bool {
        LoopShared::is_current(self)
    }

    fn is_stopped(&self) -> bool {
        LoopShared::is_stopped(self)
    }

    fn clock(&self) -> &Clock {
        LoopShared::clock(self)
    }

    fn post(&self, f: Box<dyn FnOnce() + Send>) -> bool {
        LoopShared::post(self, f)
    }

    fn schedule(&self, timer: UserTimer) -> bool {
        self.push(Command::Timer(timer))
    }

    fn pending_timers(&self) -> usize {
        LoopShared::pending_timers(self)
    }

    fn metrics(&self) -> LoopMetrics {
        self.loop_counters()
    }

    fn timer_owner(self: Arc<Self>) -> Arc<dyn TimerOwner> {
        self
    }
}

impl TimerOwner for LoopShared {
    fn index(&self) -> usize {
        LoopShared::index(self)
    }

    fn timer_started(&self) {
        LoopShared::timer_started(self);
    }

    fn timer_finished(&self) {
        LoopShared::timer_finished(self);
    }

    fn note_timer_cancelled(&self) {
        LoopShared::note_timer_cancelled(self);
    }

    fn cancelled_timers(&self) -> usize {
        LoopShared::cancelled_timers(self)
    }

    fn reset_cancelled_timers(&self) {
        LoopShared::reset_cancelled_timers(self);
    }

    fn count_timer_fired(&self, panicked: bool) {
        LoopShared::count_timer_fired(self, panicked);
    }
}
