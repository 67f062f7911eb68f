//! The loop's timers: one min-heap for connect timeouts, idle timeouts, close lingers,
//! accept back-off, and the user's timers (`schedule_once`, `schedule_repeating`).
//!
//! The loop's own entries are validated when they fire (a connection may have gone
//! meanwhile), so nothing is ever removed early. A user timer carries a shared state that
//! [`TimerId::cancel`](crate::loop_handle::TimerId::cancel) flips from any thread in O(1);
//! the loop checks it when the timer comes due and drops a cancelled timer without running
//! it. Cancelled timers still in the heap are purged in bulk once they make up half of the
//! user timers, so a program that schedules and cancels many long timers keeps a bounded
//! heap. Likewise the deadlines of closed connections are purged in bulk once as many
//! connections closed since the last purge as are alive
//! ([`Timers::connection_closed`]).

mod deadline;
#[cfg(test)]
mod tests;
mod user;

pub(crate) use deadline::deadline_after;
use user::Fired;
pub(crate) use user::{TimerOwner, TimerState, UserTimer};

use crate::driver::{ListenerId, Slot};
use crate::id::ConnectionId;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Below this many user timers in the heap, cancelled ones are left until they come due.
const PURGE_MIN: usize = 64;

/// What a timer is for.
#[derive(Debug)]
pub(crate) enum TimerKind {
    /// A client's connect deadline.
    Connect(Slot, ConnectionId),
    /// Check whether a connection has been idle too long.
    Idle(Slot, ConnectionId),
    /// A graceful close's deadline: close even if output is still queued.
    Linger(Slot, ConnectionId),
    /// An accepted connection's layer handshake deadline.
    Handshake(Slot, ConnectionId),
    /// Resume accepting after a resource error.
    ResumeAccept(ListenerId),
    /// The loop's stop deadline.
    Stop,
    /// A user's closure.
    User(UserTimer),
}

/// One heap entry, ordered so that the earliest deadline (then the earliest added) is on
/// top of the max-heap.
struct Entry {
    at: Instant,
    seq: u64,
    kind: TimerKind,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .at
            .cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A min-heap of deadlines.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Entry>,
    seq: u64,
    /// User timers in the heap (cancelled or not).
    user: usize,
    /// Connections closed since the last purge of their deadlines.
    closed: usize,
}

impl Timers {
    pub(crate) fn add(&mut self, at: Instant, kind: TimerKind) {
        if matches!(kind, TimerKind::User(_)) {
            self.user += 1;
        }
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            kind,
        });
    }

    /// How long until the next deadline, from `now` (`None`: no timer).
    pub(crate) fn next_in(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|e| e.at.saturating_duration_since(now))
    }

    /// Removes and returns a timer whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        match self.heap.peek() {
            Some(e) if e.at <= now => {
                let entry = self.heap.pop()?;
                if matches!(entry.kind, TimerKind::User(_)) {
                    self.user -= 1;
                }
                Some(entry.kind)
            }
            _ => None,
        }
    }

    /// Adds a user timer that arrived through the inbox (dropped at once if it was
    /// cancelled on its way), purging cancelled timers first if they pile up.
    pub(crate) fn add_user(&mut self, timer: UserTimer, shared: &dyn TimerOwner) {
        if timer.state.is_cancelled() {
            return;
        }
        if self.user >= PURGE_MIN && shared.cancelled_timers() * 2 >= self.user {
            self.purge_cancelled(shared);
        }
        self.add(timer.at, TimerKind::User(timer));
    }

    /// Runs a due user timer (unless it was cancelled), counts it, and puts it back if it
    /// repeats.
    pub(crate) fn fire_user(&mut self, timer: UserTimer, now: Instant, shared: &dyn TimerOwner) {
        match timer.fire(now) {
            Fired::Cancelled => {}
            Fired::Ran(again) => {
                shared.count_timer_fired(false);
                if let Some(timer) = again {
                    self.add_user(timer, shared);
                }
            }
            Fired::Panicked => shared.count_timer_fired(true),
        }
    }

    /// Drops every cancelled user timer from the heap.
    fn purge_cancelled(&mut self, shared: &dyn TimerOwner) {
        shared.reset_cancelled_timers();
        let before = self.heap.len();
        self.heap
            .retain(|e| !matches!(&e.kind, TimerKind::User(t) if t.state.is_cancelled()));
        self.user -= before - self.heap.len();
    }

    /// A connection closed. Its deadlines (connect, idle, handshake, linger) would stay
    /// in the heap until due, up to a whole idle timeout; so once as many connections
    /// closed since the last purge as are alive now (and at least [`PURGE_MIN`]), every
    /// entry of a connection `is_live` does not know is dropped. The heap then holds at
    /// most a few entries per connection alive or closed since the purge, and each purge
    /// is paid for by the closes before it.
    pub(crate) fn connection_closed(
        &mut self,
        live: usize,
        is_live: impl Fn(Slot, ConnectionId) -> bool,
    ) {
        self.closed += 1;
        if self.closed < PURGE_MIN.max(live) {
            return;
        }
        self.closed = 0;
        self.heap.retain(|e| match e.kind {
            TimerKind::Connect(slot, id)
            | TimerKind::Idle(slot, id)
            | TimerKind::Linger(slot, id)
            | TimerKind::Handshake(slot, id) => is_live(slot, id),
            TimerKind::ResumeAccept(_) | TimerKind::Stop | TimerKind::User(_) => true,
        });
    }

    /// Entries in the heap.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// User timers in the heap, cancelled ones included.
    #[cfg(test)]
    fn user_len(&self) -> usize {
        self.user
    }
}

impl Drop for Timers {
    fn drop(&mut self) {
        // Dropping the entries marks every user timer left as done.
        self.heap.clear();
    }
}
