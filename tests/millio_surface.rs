//! mill-io's `EventLoop` surface on ringmill's event loop: the constructors, the timer calls
//! in mill-io's shapes (`schedule_once` and `schedule_repeating` return the `TimerId`,
//! `cancel_timer`, `pending_timers`), and the compute pool (`spawn_compute`,
//! `spawn_compute_with_priority`, `get_compute_metrics`).

mod common;

use common::*;
use ringmill::errors::NetworkError;
use ringmill::{EventLoop, TaskPriority};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::Duration;

/// `new(workers, capacity, timeout)` runs `workers` loop threads; `new_low_latency` one;
/// zero workers or zero capacity are configuration errors, not a loop that cannot work.
#[test]
fn millio_constructors_map_onto_the_builder() {
    let event_loop = EventLoop::new(3, 64, 10).expect("new(3, 64, 10)");
    assert_eq!(event_loop.threads(), 3);
    event_loop.stop();
    let low = EventLoop::new_low_latency(1024, 10).expect("new_low_latency");
    assert_eq!(low.threads(), 1);
    low.stop();
    for (workers, capacity, what) in [(0, 1024, "threads"), (2, 0, "events_capacity")] {
        let e = EventLoop::new(workers, capacity, 10).expect_err(what);
        assert!(
            matches!(
                e.downcast_ref::<NetworkError>(),
                Some(NetworkError::Configuration(_))
            ),
            "{what}: {e}"
        );
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
}

backend_matrix! {
    /// `pending_timers` counts the user timers that may still run, over every loop
    /// thread: a one-shot leaves the count when it fires, any timer when it is
    /// cancelled; a repeating timer stays counted while it ticks; stopping the loop drops
    /// what is left.
    fn pending_timers_counts_what_may_still_run(backend: Backend) {
        let event_loop = event_loop(backend);
        assert_eq!(event_loop.pending_timers(), 0);
        let far = event_loop.schedule_once(Duration::from_secs(3600), || {});
        let far2 = event_loop.schedule_once(Duration::from_secs(3600), || {});
        assert_ne!(far.loop_index(), far2.loop_index(), "round robin over the loops");
        let ticks = Arc::new(Shared::new(0usize));
        let t = Arc::clone(&ticks);
        let every = event_loop.schedule_repeating(Duration::from_millis(2), move || {
            t.update(|n| *n += 1);
        });
        let (tx, rx) = mpsc::channel();
        event_loop.schedule_once(Duration::from_millis(1), move || tx.send(()).unwrap());
        assert_eq!(event_loop.pending_timers(), 4);
        rx.recv_timeout(WAIT).expect("the one-shot fired");
        ticks.wait_until(WAIT, "three ticks", |n| *n >= 3);
        assert_eq!(event_loop.pending_timers(), 3, "fired one-shot left, repeating stays");
        assert!(event_loop.cancel_timer(far.clone()));
        assert!(!event_loop.cancel_timer(far), "cancelled already");
        assert_eq!(event_loop.pending_timers(), 2);
        assert!(event_loop.cancel_timer(every));
        assert_eq!(event_loop.pending_timers(), 1);
        event_loop.stop();
        assert_eq!(event_loop.pending_timers(), 0, "stopping drops what is left");
        assert!(!far2.is_pending());
    }

    /// mill-io clamps a zero interval to one tick: the timer runs, again and again,
    /// instead of failing; after `stop` the calls still return a `TimerId`, one that is
    /// over (the `try_` forms say why).
    fn repeating_zero_interval_ticks_and_stopped_loop_gives_an_over_timer(backend: Backend) {
        let event_loop = event_loop(backend);
        let ticks = Arc::new(Shared::new(0usize));
        let t = Arc::clone(&ticks);
        let timer = event_loop.schedule_repeating(Duration::ZERO, move || t.update(|n| *n += 1));
        ticks.wait_until(WAIT, "a zero-interval timer ticking", |n| *n >= 3);
        assert!(event_loop.cancel_timer(timer));
        assert!(event_loop.try_schedule_repeating(Duration::ZERO, || {}).is_err());
        event_loop.stop();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        let late = event_loop.schedule_once(Duration::ZERO, move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!late.is_pending());
        assert!(!event_loop.cancel_timer(late));
        let late = event_loop.schedule_repeating(Duration::from_millis(1), || {});
        assert!(!late.is_pending());
        assert_eq!(event_loop.pending_timers(), 0);
        let e = event_loop.try_schedule_once(Duration::ZERO, || {}).expect_err("stopped");
        assert!(matches!(e.downcast_ref::<NetworkError>(), Some(NetworkError::EventLoopGone)));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    /// Compute tasks run off the loop threads, by priority (first in, first out within
    /// one); a panicking task is caught and counted and the pool goes on.
    fn compute_pool_orders_by_priority_and_contains_panics(backend: Backend) {
        let event_loop = event_loop_with(backend, |b| b.compute_threads(1));
        assert_eq!(event_loop.compute_threads(), 1);
        // Hold the only pool thread while the rest queue up.
        let held = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let (h, r) = (Arc::clone(&held), Arc::clone(&release));
        let thread = Arc::new(Mutex::new(String::new()));
        let th = Arc::clone(&thread);
        event_loop.spawn_compute(move || {
            *th.lock().unwrap() = std::thread::current().name().unwrap_or("").to_string();
            h.wait();
            r.wait();
        });
        held.wait();
        let order = Arc::new(Shared::new(Vec::new()));
        let queue = [
            (TaskPriority::Low, "low-1"),
            (TaskPriority::Normal, "normal-1"),
            (TaskPriority::Critical, "critical"),
            (TaskPriority::Low, "low-2"),
            (TaskPriority::High, "high"),
            (TaskPriority::Normal, "normal-2"),
        ];
        event_loop.spawn_compute_with_priority(|| panic!("compute boom"), TaskPriority::High);
        for (priority, name) in queue {
            let o = Arc::clone(&order);
            event_loop.spawn_compute_with_priority(move || o.update(|v| v.push(name)), priority);
        }
        let metrics = event_loop.get_compute_metrics();
        assert_eq!(metrics.queue_depth_low(), 2);
        assert_eq!(metrics.queue_depth_high(), 2);
        assert_eq!(metrics.active_workers(), 1);
        release.wait();
        order.wait_until(WAIT, "every queued task", |v| v.len() == 6);
        assert_eq!(
            order.update(|v| v.clone()),
            ["critical", "high", "normal-1", "normal-2", "low-1", "low-2"]
        );
        let name = thread.lock().unwrap().clone();
        assert!(name.starts_with("ringmill-compute-"), "ran on {name:?}");
        // Joins the pool: the counters are final.
        event_loop.stop();
        let m = event_loop.get_compute_metrics();
        assert_eq!(m.tasks_submitted(), 8);
        assert_eq!(m.tasks_failed(), 1, "the panicking task");
        assert_eq!(m.tasks_completed(), 7);
    }

    /// `stop` lets the tasks already queued finish and joins the pool's threads before it
    /// returns; a task spawned afterwards never runs and is counted as rejected.
    fn stop_drains_and_joins_the_compute_pool(backend: Backend) {
        let event_loop = event_loop_with(backend, |b| b.compute_threads(2));
        let done = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Barrier::new(3));
        for _ in 0..2 {
            let g = Arc::clone(&gate);
            event_loop.spawn_compute(move || {
                g.wait();
            });
        }
        for _ in 0..20 {
            let d = Arc::clone(&done);
            event_loop.spawn_compute_with_priority(
                move || {
                    d.fetch_add(1, Ordering::SeqCst);
                },
                TaskPriority::Low,
            );
        }
        gate.wait();
        event_loop.stop();
        assert_eq!(done.load(Ordering::SeqCst), 20, "queued tasks ran before stop returned");
        let d = Arc::clone(&done);
        event_loop.spawn_compute(move || {
            d.fetch_add(1, Ordering::SeqCst);
        });
        let m = event_loop.get_compute_metrics();
        assert_eq!(m.tasks_rejected(), 1);
        assert_eq!(m.active_workers(), 0);
        assert_eq!(done.load(Ordering::SeqCst), 20);
    }
}
