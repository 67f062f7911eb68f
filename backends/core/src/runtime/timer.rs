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

use super::callback;
use crate::driver::{ListenerId, Slot};
use crate::id::ConnectionId;
use crate::inbox::LoopShared;
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
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
    pub(crate) fn add_user(&mut self, timer: UserTimer, shared: &LoopShared) {
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
    pub(crate) fn fire_user(&mut self, timer: UserTimer, now: Instant, shared: &LoopShared) {
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
    fn purge_cancelled(&mut self, shared: &LoopShared) {
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

// ---------------------------------------------------------------------------------------
// User timers
// ---------------------------------------------------------------------------------------

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;
const DONE: u8 = 3;

static NEXT_TIMER: AtomicU64 = AtomicU64::new(1);

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
    owner: Arc<LoopShared>,
}

impl TimerState {
    /// A pending timer of `owner`, counted in its pending timers until it is over.
    pub(crate) fn new(owner: Arc<LoopShared>) -> Arc<Self> {
        owner.timer_started();
        Arc::new(Self {
            id: NEXT_TIMER.fetch_add(1, Ordering::Relaxed),
            state: AtomicU8::new(PENDING),
            owner,
        })
    }

    /// A timer that is over already (never counted, never runs).
    pub(crate) fn over(owner: Arc<LoopShared>) -> Arc<Self> {
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
    pub(crate) fn owner(&self) -> &Arc<LoopShared> {
        &self.owner
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

    fn is_cancelled(&self) -> bool {
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
    state: Arc<TimerState>,
    at: Instant,
    task: Task,
}

/// What firing a user timer did.
enum Fired {
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

    fn fire(mut self, now: Instant) -> Fired {
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

/// The deadline after `at` for a timer of `period`: `at + period`, or, when the loop is
/// behind by more than a period, the first tick of the same phase after `now`. Deadlines
/// stay on the grid `start + k * period`, so lateness never accumulates, and missed ticks
/// are skipped rather than run in a burst.
fn next_deadline(at: Instant, period: Duration, now: Instant) -> Instant {
    let next = at.checked_add(period).unwrap_or_else(|| far_future(now));
    if next > now {
        return next;
    }
    let behind = now.duration_since(at).as_nanos();
    let ticks = behind / period.as_nanos() + 1;
    u64::try_from(period.as_nanos().saturating_mul(ticks))
        .ok()
        .and_then(|nanos| at.checked_add(Duration::from_nanos(nanos)))
        .unwrap_or_else(|| far_future(now))
}

/// `now + delay`, or a deadline a century away if that cannot be represented.
pub(crate) fn deadline_after(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay).unwrap_or_else(|| far_future(now))
}

fn far_future(now: Instant) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(CENTURY).unwrap_or(now)
}

impl Drop for Timers {
    fn drop(&mut self) {
        // Dropping the entries marks every user timer left as done.
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Waker;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    struct NoWake;

    impl Waker for NoWake {
        fn wake(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn shared() -> Arc<LoopShared> {
        LoopShared::new(0, Arc::new(NoWake), false)
    }

    fn kind_name(k: &TimerKind) -> String {
        format!("{k:?}")
    }

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.add(now + Duration::from_secs(2), TimerKind::Stop);
        t.add(
            now + Duration::from_secs(1),
            TimerKind::ResumeAccept(ListenerId(1)),
        );
        assert_eq!(t.next_in(now), Some(Duration::from_secs(1)));
        assert!(t.pop_due(now).is_none());
        assert_eq!(
            t.pop_due(now + Duration::from_secs(1))
                .as_ref()
                .map(kind_name),
            Some(kind_name(&TimerKind::ResumeAccept(ListenerId(1))))
        );
        assert!(t.pop_due(now + Duration::from_secs(1)).is_none());
        assert!(matches!(
            t.pop_due(now + Duration::from_secs(5)),
            Some(TimerKind::Stop)
        ));
        assert_eq!(t.next_in(now), None);
    }

    #[test]
    fn equal_deadlines_fire_in_the_order_they_were_added() {
        let mut t = Timers::default();
        let now = Instant::now();
        for i in 0..5 {
            t.add(now, TimerKind::ResumeAccept(ListenerId(i)));
        }
        for i in 0..5 {
            match t.pop_due(now) {
                Some(TimerKind::ResumeAccept(ListenerId(n))) => assert_eq!(n, i),
                other => panic!("expected listener {i}, got {other:?}"),
            }
        }
    }

    /// Fires every due timer the way the worker does, up to `now`.
    fn run_due(t: &mut Timers, now: Instant, shared: &LoopShared) {
        while let Some(kind) = t.pop_due(now) {
            match kind {
                TimerKind::User(u) => t.fire_user(u, now, shared),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn counter() -> (Arc<AtomicUsize>, impl FnMut() + Send + 'static) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = Arc::clone(&n);
        (n, move || {
            m.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[test]
    fn once_runs_once_and_cancel_then_reports_false() {
        let shared = shared();
        let mut t = Timers::default();
        let now = Instant::now();
        let state = TimerState::new(Arc::clone(&shared));
        let (n, f) = counter();
        let timer = UserTimer::once(Arc::clone(&state), now, Box::new(f));
        t.add_user(timer, &shared);
        assert!(state.is_pending());
        run_due(&mut t, now, &shared);
        run_due(&mut t, now + Duration::from_secs(10), &shared);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(!state.is_pending());
        assert!(!state.cancel(), "a timer that ran cannot be cancelled");
        assert_eq!(shared.loop_counters().timers_fired, 1);
    }

    /// The loop's pending count: +1 per timer scheduled, -1 when a one-shot starts, when a
    /// timer is cancelled (running or not), when one is dropped unfired or panics; a
    /// repeating timer stays counted across its runs.
    #[test]
    fn pending_count_follows_each_timer_to_its_end() {
        let shared = shared();
        let mut t = Timers::default();
        let now = Instant::now();
        let period = Duration::from_millis(10);
        let once = TimerState::new(Arc::clone(&shared));
        t.add_user(
            UserTimer::once(Arc::clone(&once), now, Box::new(|| {})),
            &shared,
        );
        let every = TimerState::new(Arc::clone(&shared));
        let (ticks, f) = counter();
        t.add_user(
            UserTimer::repeating(Arc::clone(&every), now + period, period, Box::new(f)),
            &shared,
        );
        let later = TimerState::new(Arc::clone(&shared));
        t.add_user(
            UserTimer::once(
                Arc::clone(&later),
                now + Duration::from_secs(60),
                Box::new(|| {}),
            ),
            &shared,
        );
        let dropped = TimerState::new(Arc::clone(&shared));
        drop(UserTimer::once(Arc::clone(&dropped), now, Box::new(|| {})));
        let panics = TimerState::new(Arc::clone(&shared));
        t.add_user(
            UserTimer::repeating(
                Arc::clone(&panics),
                now + period,
                period,
                Box::new(|| panic!("boom")),
            ),
            &shared,
        );
        assert_eq!(shared.pending_timers(), 4, "the dropped one is over");
        run_due(&mut t, now, &shared);
        assert_eq!(shared.pending_timers(), 3, "the one-shot started");
        run_due(&mut t, now + period * 3, &shared);
        assert_eq!(ticks.load(Ordering::SeqCst), 1);
        assert_eq!(
            shared.pending_timers(),
            2,
            "repeating stays, the panicking one is over"
        );
        assert!(later.cancel());
        assert!(!later.cancel());
        assert_eq!(shared.pending_timers(), 1);
        assert!(every.cancel());
        assert_eq!(shared.pending_timers(), 0);
        run_due(&mut t, now + Duration::from_secs(120), &shared);
        assert_eq!(
            shared.pending_timers(),
            0,
            "cancelled entries leaving the heap"
        );
        let over = TimerState::over(Arc::clone(&shared));
        assert!(!over.is_pending() && !over.cancel());
        assert_eq!(shared.pending_timers(), 0);
        let left = TimerState::new(Arc::clone(&shared));
        t.add_user(
            UserTimer::once(Arc::clone(&left), now, Box::new(|| {})),
            &shared,
        );
        drop(t);
        assert_eq!(shared.pending_timers(), 0, "dropped with the heap");
    }

    #[test]
    fn cancelled_timer_never_runs() {
        let shared = shared();
        let mut t = Timers::default();
        let now = Instant::now();
        let state = TimerState::new(Arc::clone(&shared));
        let (n, f) = counter();
        t.add_user(
            UserTimer::once(Arc::clone(&state), now, Box::new(f)),
            &shared,
        );
        assert!(state.cancel());
        assert!(!state.cancel(), "second cancel");
        run_due(&mut t, now + Duration::from_secs(1), &shared);
        assert_eq!(n.load(Ordering::SeqCst), 0);
        assert_eq!(t.user_len(), 0);
    }

    #[test]
    fn repeating_keeps_its_grid_and_skips_missed_ticks() {
        let shared = shared();
        let mut t = Timers::default();
        let start = Instant::now();
        let period = Duration::from_millis(10);
        let state = TimerState::new(Arc::clone(&shared));
        let (n, f) = counter();
        t.add_user(
            UserTimer::repeating(Arc::clone(&state), start + period, period, Box::new(f)),
            &shared,
        );
        // Fired late (3 ms after its deadline): the next deadline is still on the grid.
        run_due(&mut t, start + Duration::from_millis(13), &shared);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert_eq!(
            t.next_in(start),
            Some(Duration::from_millis(20)),
            "next tick at start + 2 periods"
        );
        // Very late (past three more ticks): one run, and the next tick is the first one
        // after now on the same grid.
        run_due(&mut t, start + Duration::from_millis(55), &shared);
        assert_eq!(n.load(Ordering::SeqCst), 2);
        assert_eq!(t.next_in(start), Some(Duration::from_millis(60)));
        assert!(state.cancel());
        run_due(&mut t, start + Duration::from_secs(1), &shared);
        assert_eq!(n.load(Ordering::SeqCst), 2);
        assert!(!state.is_pending());
    }

    #[test]
    fn panicking_timer_is_caught_counted_and_not_repeated() {
        let shared = shared();
        let mut t = Timers::default();
        let now = Instant::now();
        let state = TimerState::new(Arc::clone(&shared));
        t.add_user(
            UserTimer::repeating(
                Arc::clone(&state),
                now,
                Duration::from_millis(1),
                Box::new(|| panic!("boom")),
            ),
            &shared,
        );
        run_due(&mut t, now, &shared);
        assert!(!state.is_pending());
        assert_eq!(t.user_len(), 0);
        let c = shared.loop_counters();
        assert_eq!((c.timers_fired, c.task_panics), (1, 1));
    }

    #[test]
    fn cancelled_timers_are_purged_once_they_pile_up() {
        let shared = shared();
        let mut t = Timers::default();
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        let mut states = Vec::new();
        for _ in 0..200 {
            let state = TimerState::new(Arc::clone(&shared));
            t.add_user(
                UserTimer::once(Arc::clone(&state), far, Box::new(|| {})),
                &shared,
            );
            states.push(state);
        }
        for s in &states[..150] {
            assert!(s.cancel());
        }
        assert_eq!(t.user_len(), 200, "cancellation is lazy");
        let ran = Arc::new(Mutex::new(0));
        let r = Arc::clone(&ran);
        t.add_user(
            UserTimer::once(
                TimerState::new(Arc::clone(&shared)),
                far,
                Box::new(move || *r.lock().unwrap() += 1),
            ),
            &shared,
        );
        assert_eq!(t.user_len(), 51, "the next add purges the cancelled ones");
        run_due(&mut t, far, &shared);
        assert_eq!(*ran.lock().unwrap(), 1);
        assert!(
            states[150..].iter().all(|s| !s.is_pending()),
            "the rest ran"
        );
        assert_eq!(shared.loop_counters().timers_fired, 51);
    }

    #[test]
    fn dropping_the_heap_marks_timers_done() {
        let shared = shared();
        let mut t = Timers::default();
        let state = TimerState::new(Arc::clone(&shared));
        t.add_user(
            UserTimer::once(
                Arc::clone(&state),
                Instant::now() + Duration::from_secs(60),
                Box::new(|| {}),
            ),
            &shared,
        );
        drop(t);
        assert!(!state.is_pending());
        assert!(!state.cancel(), "a dropped timer cannot be cancelled");
    }

    #[test]
    fn deadlines_far_away_do_not_overflow() {
        let now = Instant::now();
        assert!(deadline_after(now, Duration::MAX) > now);
        assert!(next_deadline(now, Duration::MAX, now) > now);
    }

    #[test]
    fn deadlines_of_closed_connections_are_purged_once_enough_closed() {
        let now = Instant::now();
        let mut t = Timers::default();
        let far = now + Duration::from_secs(60);
        for i in 0..200u32 {
            t.add(
                far,
                TimerKind::Idle(Slot(u64::from(i)), ConnectionId::new(u64::from(i))),
            );
        }
        t.add(far, TimerKind::Stop);
        // Slots 0..100 stay alive; 100..200 close one by one.
        let live = |slot: Slot, _id: ConnectionId| slot.index() < 100;
        for _ in 0..99 {
            t.connection_closed(100, live);
        }
        assert_eq!(
            t.len(),
            201,
            "fewer closes than live connections: nothing purged"
        );
        t.connection_closed(100, live);
        assert_eq!(
            t.len(),
            101,
            "the closed ones' deadlines are gone, the rest stay"
        );
        let mut kept = 0;
        while t.pop_due(far).is_some() {
            kept += 1;
        }
        assert_eq!(kept, 101);
    }
}
