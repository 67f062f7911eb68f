//! User timers (`schedule_once`, `schedule_repeating`): the closure, its deadline, and the
//! state that [`TimerId::cancel`](crate::loop_handle::TimerId::cancel) flips from any thread.

use super::deadline::next_deadline;
use crate::runtime::callback;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;
const DONE: u8 = 3;

static NEXT_TIMER: AtomicU64 = AtomicU64::new(1);

/// The loop a timer runs on, as its timers see it: the counts it keeps of them
/// (implemented by the runtime's `LoopShared`).
pub(crate) trait TimerOwner: Send + Sync {
    /// The loop's position in its event loop.
    fn index(&self) -> usize;
    /// A user timer was scheduled: it counts as pending.
    fn timer_started(&self);
    /// A user timer is over (started once, cancelled, or dropped).
    fn timer_finished(&self);
    /// A user timer was cancelled (its heap entry stays until purged).
    fn note_timer_cancelled(&self);
    /// Timers cancelled since the last purge.
    fn cancelled_timers(&self) -> usize;
    /// The heap was purged of cancelled timers.
    fn reset_cancelled_timers(&self);
    /// A user timer ran (and whether it panicked).
    fn count_timer_fired(&self, panicked: bool);
}

/// The part of a user timer that its [`TimerId`](crate::loop_handle::TimerId) shares with
/// the loop: where it is in its life.
///
/// `PENDING` → `DONE` when a one-shot timer starts running (or is dropped unfired);
/// `PENDING` → `RUNNING` → `PENDING` around each run of a repeating one; `PENDING` or
/// `RUNNING` → `CANCELLED` by `cancel`. The loop starts a run only by moving the state out
/// of `PENDING`, so once `cancel` has returned `true` the closure never starts again.
pub(crate) struct TimerState {
    id: u64,
    state: AtomicU8,
    owner: Arc<dyn TimerOwner>,
}

impl TimerState {
    /// A pending timer of `owner`, counted in its pending timers until it is over.
    pub(crate) fn new(owner: Arc<dyn TimerOwner>) -> Arc<Self> {
        owner.timer_started();
        Arc::new(Self {
            id: NEXT_TIMER.fetch_add(1, Ordering::Relaxed),
            state: AtomicU8::new(PENDING),
            owner,
        })
    }

    /// A timer that is over already (never counted, never runs).
    pub(crate) fn over(owner: Arc<dyn TimerOwner>) -> Arc<Self> {
        Arc::new(Self {
            id: NEXT_TIMER.fetch_add(1, Ordering::Relaxed),
            state: AtomicU8::new(DONE),
            owner,
        })
    }

    /// Process-wide unique number of the timer.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The loop the timer runs on.
    pub(crate) fn owner(&self) -> &dyn TimerOwner {
        &*self.owner
    }

    /// Cancels the timer: `true` if it was waiting (or a repeating timer was running) and
    /// will now never start again; `false` if it already ran, was cancelled, or was dropped.
    pub(crate) fn cancel(&self) -> bool {
        let cancelled = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                matches!(s, PENDING | RUNNING).then_some(CANCELLED)
            })
            .is_ok();
        if cancelled {
            self.owner.note_timer_cancelled();
            self.owner.timer_finished();
        }
        cancelled
    }

    /// Whether the closure may still run (again).
    pub(crate) fn is_pending(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), PENDING | RUNNING)
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.state.load(Ordering::Acquire) == CANCELLED
    }

    /// Moves `from` to `to`; `false` if the state was something else (cancelled). Moving
    /// to `DONE` ends the timer's count as pending (each timer reaches `DONE` or
    /// `CANCELLED` once, and only from a live state).
    fn step(&self, from: u8, to: u8) -> bool {
        let moved = self
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if moved && to == DONE {
            self.owner.timer_finished();
        }
        moved
    }
}

/// What a user timer runs.
enum Task {
    Once(Option<Box<dyn FnOnce() + Send>>),
    Every(Duration, Box<dyn FnMut() + Send>),
}

/// A user's closure with its deadline, as the heap holds it.
pub(crate) struct UserTimer {
    pub(super) state: Arc<TimerState>,
    pub(super) at: Instant,
    task: Task,
}

/// What firing a user timer did.
pub(super) enum Fired {
    /// Cancelled before it could start: nothing ran.
    Cancelled,
    /// The closure ran; a repeating timer comes back with its next deadline.
    Ran(Option<UserTimer>),
    /// The closure panicked (a repeating timer is not run again).
    Panicked,
}

impl UserTimer {
    /// A timer that runs `f` once, at `at`.
    pub(crate) fn once(state: Arc<TimerState>, at: Instant, f: Box<dyn FnOnce() + Send>) -> Self {
        Self {
            state,
            at,
            task: Task::Once(Some(f)),
        }
    }

    /// A timer that runs `f` at `at`, then every `period` (which must not be zero).
    pub(crate) fn repeating(
        state: Arc<TimerState>,
        at: Instant,
        period: Duration,
        f: Box<dyn FnMut() + Send>,
    ) -> Self {
        debug_assert!(!period.is_zero());
        Self {
            state,
            at,
            task: Task::Every(period, f),
        }
    }

    pub(super) fn fire(mut self, now: Instant) -> Fired {
        let state = Arc::clone(&self.state);
        match &mut self.task {
            Task::Once(f) => {
                let Some(f) = f.take() else {
                    return Fired::Cancelled;
                };
                if !state.step(PENDING, DONE) {
                    return Fired::Cancelled;
                }
                if callback::call_task("timer", f) {
                    Fired::Ran(None)
                } else {
                    Fired::Panicked
                }
            }
            Task::Every(period, f) => {
                let period = *period;
                if !state.step(PENDING, RUNNING) {
                    return Fired::Cancelled;
                }
                if !callback::call_task("repeating timer", f) {
                    // Not run again: its state may be broken. Dropping `self` marks it done.
                    return Fired::Panicked;
                }
                if !state.step(RUNNING, PENDING) {
                    // Cancelled while it ran.
                    return Fired::Ran(None);
                }
                self.at = next_deadline(self.at, period, now);
                Fired::Ran(Some(self))
            }
        }
    }
}

impl Drop for UserTimer {
    /// A timer dropped without running again (its loop exited, or it panicked) is done:
    /// `cancel` then returns `false`.
    fn drop(&mut self) {
        if !self.state.step(PENDING, DONE) {
            self.state.step(RUNNING, DONE);
        }
    }
}

impl fmt::Debug for UserTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserTimer")
            .field("id", &self.state.id)
            .field("at", &self.at)
            .finish()
    }
}
