//! Tests of the timer heap, user timers and deadlines.

use super::deadline::next_deadline;
use super::*;
use crate::driver::Waker;
use crate::runtime::shared::LoopShared;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    let state = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    let (n, f) = counter();
    let timer = UserTimer::once(Arc::clone(&state), now, Box::new(f));
    t.add_user(timer, &*shared);
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
    let once = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    t.add_user(
        UserTimer::once(Arc::clone(&once), now, Box::new(|| {})),
        &*shared,
    );
    let every = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    let (ticks, f) = counter();
    t.add_user(
        UserTimer::repeating(Arc::clone(&every), now + period, period, Box::new(f)),
        &*shared,
    );
    let later = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    t.add_user(
        UserTimer::once(
            Arc::clone(&later),
            now + Duration::from_secs(60),
            Box::new(|| {}),
        ),
        &*shared,
    );
    let dropped = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    drop(UserTimer::once(Arc::clone(&dropped), now, Box::new(|| {})));
    let panics = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    t.add_user(
        UserTimer::repeating(
            Arc::clone(&panics),
            now + period,
            period,
            Box::new(|| panic!("boom")),
        ),
        &*shared,
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
    let over = TimerState::over(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    assert!(!over.is_pending() && !over.cancel());
    assert_eq!(shared.pending_timers(), 0);
    let left = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    t.add_user(
        UserTimer::once(Arc::clone(&left), now, Box::new(|| {})),
        &*shared,
    );
    drop(t);
    assert_eq!(shared.pending_timers(), 0, "dropped with the heap");
}

#[test]
fn cancelled_timer_never_runs() {
    let shared = shared();
    let mut t = Timers::default();
    let now = Instant::now();
    let state = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    let (n, f) = counter();
    t.add_user(
        UserTimer::once(Arc::clone(&state), now, Box::new(f)),
        &*shared,
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
    let state = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    let (n, f) = counter();
    t.add_user(
        UserTimer::repeating(Arc::clone(&state), start + period, period, Box::new(f)),
        &*shared,
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
    let state = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    t.add_user(
        UserTimer::repeating(
            Arc::clone(&state),
            now,
            Duration::from_millis(1),
            Box::new(|| panic!("boom")),
        ),
        &*shared,
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
        let state = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
        t.add_user(
            UserTimer::once(Arc::clone(&state), far, Box::new(|| {})),
            &*shared,
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
            TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>),
            far,
            Box::new(move || *r.lock().unwrap() += 1),
        ),
        &*shared,
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
    let state = TimerState::new(Arc::clone(&shared) as Arc<dyn TimerOwner>);
    t.add_user(
        UserTimer::once(
            Arc::clone(&state),
            Instant::now() + Duration::from_secs(60),
            Box::new(|| {}),
        ),
        &*shared,
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
