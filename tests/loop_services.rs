//! Loop services: one-shot and repeating timers, cancellation, and closures posted to a
//! loop, from the event loop, from handlers (through `ServerContext`) and from user threads
//! (through `LoopHandle`). Each closure runs on the loop thread it was aimed at; a
//! cancelled timer never runs; a panicking closure is caught and the loop goes on.

mod common;

use common::*;
use ringmill::{LoopHandle, TimerId};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The name of the calling thread.
fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_string()
}

/// Waits until every closure queued on `handle`'s loop before this call has run (a posted
/// closure runs after them), and every timer due within `delay` (a timer `delay` from now
/// fires after them: the heap fires in deadline order).
fn barrier(handle: &LoopHandle, delay: Duration) {
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    handle
        .post(move || {
            let _ = tx2.send(());
        })
        .expect("post");
    rx.recv_timeout(WAIT).expect("the posted barrier ran");
    handle
        .schedule_once(delay, move || {
            let _ = tx.send(());
        })
        .expect("schedule");
    rx.recv_timeout(WAIT).expect("the timer barrier fired");
}

backend_matrix! {
    /// A one-shot timer fires once, on a loop thread, no earlier than its delay; it is no
    /// longer pending afterwards and can no longer be cancelled. Timers aimed at a loop
    /// through its handle run on that loop's thread.
    fn once_fires_once_on_its_loop(backend: Backend) {
        let event_loop = event_loop(backend);
        let (tx, rx) = mpsc::channel();
        let scheduled = std::time::Instant::now();
        let timer = event_loop
            .try_schedule_once(Duration::from_millis(20), move || {
                tx.send((thread_name(), std::time::Instant::now())).unwrap();
            })
            .expect("schedule_once");
        let (name, at) = rx.recv_timeout(WAIT).expect("the timer fired");
        assert!(name.starts_with("ringmill-loop-"), "ran on {name:?}");
        assert_eq!(name, format!("ringmill-loop-{}", timer.loop_index()));
        assert!(at - scheduled >= Duration::from_millis(20), "fired before its delay");
        assert_eq!(
            rx.recv_timeout(WAIT),
            Err(mpsc::RecvTimeoutError::Disconnected),
            "the closure is dropped after its one run"
        );
        assert!(!timer.is_pending());
        assert!(!event_loop.cancel(&timer), "a timer that ran cannot be cancelled");

        for index in 0..event_loop.threads() {
            let handle = event_loop.handle(index).expect("handle");
            assert_eq!(handle.index(), index);
            assert!(!handle.is_current());
            let (tx, rx) = mpsc::channel();
            handle
                .schedule_once(Duration::from_millis(1), move || {
                    let current = LoopHandle::current().map(|h| h.index());
                    tx.send((thread_name(), current)).unwrap();
                })
                .unwrap();
            let (name, current) = rx.recv_timeout(WAIT).expect("fired");
            assert_eq!(name, format!("ringmill-loop-{index}"));
            assert_eq!(current, Some(index));
        }
        assert!(event_loop.handle(event_loop.threads()).is_none());
        assert!(LoopHandle::current().is_none(), "the test thread is not a loop");
        for handle in event_loop.handles() {
            barrier(&handle, Duration::ZERO);
        }
        // 3 timers above, and the barriers' own (counted after they ran: not all yet).
        assert!(event_loop.metrics().timers_fired >= 3);
    }

    /// A repeating timer fires again and again; once cancelled it never runs again, even
    /// though ticks would have been due. Cancelling twice reports `false` the second time.
    fn repeating_fires_until_cancelled(backend: Backend) {
        let event_loop = event_loop(backend);
        let count = Arc::new(Shared::new(0usize));
        let c = Arc::clone(&count);
        let period = Duration::from_millis(5);
        let timer = event_loop
            .try_schedule_repeating(period, move || c.update(|n| *n += 1))
            .expect("schedule_repeating");
        count.wait_until(WAIT, "five ticks", |n| *n >= 5);
        assert!(timer.is_pending());
        assert!(timer.cancel(), "cancel a running repeating timer");
        assert!(!timer.cancel(), "second cancel");
        assert!(!timer.is_pending());
        let handle = event_loop.handle(timer.loop_index()).unwrap();
        // A run that was under way when cancel returned has finished after this.
        barrier(&handle, Duration::ZERO);
        let at_cancel = count.with(|n| *n);
        // Ten periods later, no tick ran: every tick due before the barrier timer would
        // have fired before it.
        barrier(&handle, period * 10);
        assert_eq!(count.with(|n| *n), at_cancel, "a cancelled timer ran again");
    }

    /// A timer cancelled before its deadline never runs; `cancel` says so once.
    fn cancel_before_firing_prevents_it(backend: Backend) {
        let event_loop = event_loop(backend);
        let handle = event_loop.handle(0).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        let timer = handle
            .schedule_once(Duration::from_millis(30), move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        assert!(timer.is_pending());
        assert!(handle.cancel(&timer));
        assert!(!timer.is_pending());
        assert!(!timer.clone().cancel(), "clones are the same timer");
        barrier(&handle, Duration::from_millis(60));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the cancelled timer ran");
    }

    /// Racing cancels against firing, from another thread: for every timer, exactly one
    /// of "cancel returned true" and "the closure ran" happened.
    fn cancel_and_fire_race_has_one_winner(backend: Backend) {
        let event_loop = event_loop(backend);
        let handle = event_loop.handle(1).unwrap();
        const N: usize = 2000;
        let ran: Arc<Vec<AtomicUsize>> = Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
        let mut timers: Vec<TimerId> = Vec::with_capacity(N);
        for i in 0..N {
            let ran = Arc::clone(&ran);
            let delay = Duration::from_micros((i % 50) as u64 * 20);
            timers.push(
                handle
                    .schedule_once(delay, move || {
                        ran[i].fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap(),
            );
        }
        let cancelled: Vec<bool> = timers.iter().map(|t| t.cancel()).collect();
        barrier(&handle, Duration::from_millis(5));
        let mut both = Vec::new();
        for i in 0..N {
            let runs = ran[i].load(Ordering::SeqCst);
            assert!(runs <= 1, "timer {i} ran {runs} times");
            if cancelled[i] == (runs == 1) {
                both.push((i, cancelled[i], runs));
            }
        }
        assert!(both.is_empty(), "cancel and run disagree: {both:?}");
        assert!(timers.iter().all(|t| !t.is_pending()));
    }

    /// Closures posted from another thread run on the connection's loop, in the order
    /// they were posted, interleaved with its callbacks; `loop_of` names that loop.
    fn post_from_another_thread_runs_on_the_connections_loop(backend: Backend) {
        let event_loop = event_loop(backend);
        let connected = Arc::new(Shared::new(Vec::<(ConnectionId, String)>::new()));
        let c = Arc::clone(&connected);
        let rec = Recorder::shared();
        let handler = Recording::new(&rec).on_connect(move |_, conn| {
            c.update(|v| v.push((conn, thread_name())));
            Ok(())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        // Enough connections that both loops get some (the kernel spreads them).
        let _clients: Vec<_> = (0..8).map(|_| connect(addr_of(&server))).collect();
        connected.wait_until(WAIT, "8 connections", |v| v.len() == 8);
        let ctx = server.context();
        let conns = connected.with(|v| v.clone());
        let worker = std::thread::spawn(move || {
            let (tx, rx) = mpsc::channel();
            for (conn, name) in &conns {
                let handle = ctx.loop_of(*conn).expect("an open connection has a loop");
                assert_eq!(format!("ringmill-loop-{}", handle.index()), *name);
                for seq in 0..3 {
                    let tx = tx.clone();
                    let (conn, expected) = (*conn, name.clone());
                    ctx.post_to(conn, move || {
                        tx.send((conn, seq, thread_name(), expected)).unwrap();
                    })
                    .expect("post_to an open connection");
                }
            }
            let mut last: HashMap<ConnectionId, usize> = HashMap::new();
            for _ in 0..conns.len() * 3 {
                let (conn, seq, name, expected) = rx.recv_timeout(WAIT).expect("posted closure ran");
                assert_eq!(name, expected, "posted closure of {conn} ran off its loop");
                let want = last.get(&conn).map_or(0, |s| s + 1);
                assert_eq!(seq, want, "closures of one thread run in order");
                last.insert(conn, seq);
            }
        });
        worker.join().expect("worker thread");
        assert!(event_loop.metrics().tasks_run >= 24);
    }

    /// From handlers: `schedule_once_for` answers a request later on the connection's
    /// loop; `schedule_repeating_for` ticks until `on_disconnect` cancels it; unknown
    /// connections are refused with `ConnectionNotFound`.
    fn timers_from_handlers(backend: Backend) {
        let event_loop = event_loop(backend);
        let ticks: Arc<Mutex<HashMap<ConnectionId, TimerId>>> = Arc::default();
        let cancelled = Arc::new(Shared::new(Vec::<bool>::new()));
        let rec = Recorder::shared();
        let (t1, t2, c2) = (Arc::clone(&ticks), Arc::clone(&ticks), Arc::clone(&cancelled));
        let handler = Recording::new(&rec)
            .on_connect(move |ctx, conn| {
                let ctx2 = ctx.clone();
                let timer = ctx.schedule_repeating_for(conn, Duration::from_millis(5), move || {
                    let _ = ctx2.send_to(conn, b"tick\n");
                })?;
                t1.lock().unwrap().insert(conn, timer);
                Ok(())
            })
            .on_data(move |ctx, conn, data| {
                if data.starts_with(b"ping") {
                    let on = thread_name();
                    let ctx2 = ctx.clone();
                    ctx.schedule_once_for(conn, Duration::from_millis(10), move || {
                        let same = if thread_name() == on { "same" } else { "other" };
                        let _ = ctx2.send_to(conn, format!("pong {same}\n").as_bytes());
                    })?;
                }
                Ok(())
            })
            .on_disconnect(move |_, conn| {
                let timer = t2.lock().unwrap().remove(&conn).expect("a tick timer");
                let ok = timer.cancel();
                c2.update(|v| v.push(ok));
                Ok(())
            });
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut client = connect(addr_of(&server));
        let mut reader = BufReader::new(client.try_clone().unwrap());
        let mut line = String::new();
        for _ in 0..3 {
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, "tick\n");
        }
        client.write_all(b"ping").unwrap();
        loop {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0, "closed before the pong");
            if line != "tick\n" {
                break;
            }
        }
        assert_eq!(line, "pong same\n", "the timer ran on the connection's loop");

        let ctx = server.context();
        let id = rec.wait_conn(0, WAIT);
        let stale = ConnectionId::new(u64::MAX);
        let err = ctx.post_to(stale, || {}).expect_err("unknown connection");
        assert!(matches!(network_error(err.as_ref()), NetworkError::ConnectionNotFound(_)));
        assert!(ctx.schedule_once_for(stale, Duration::ZERO, || {}).is_err());
        drop(reader);
        drop(client);
        rec.wait_closed(id, WAIT);
        cancelled.wait_until(WAIT, "on_disconnect cancelled the tick", |v| v.len() == 1);
        assert_eq!(cancelled.with(|v| v.clone()), vec![true]);
        assert!(ctx.loop_of(id).is_none(), "a closed connection has no loop");
    }

    /// A panicking timer, repeating timer or posted closure is caught and counted; the
    /// loop goes on running timers and serving connections.
    fn panicking_closures_do_not_kill_the_loop(backend: Backend) {
        let event_loop = event_loop_with(backend, |b| b.threads(1));
        let handle = event_loop.handle(0).unwrap();
        let server = start_server(&event_loop, server_config().build(), Echo::new());
        let before = event_loop.metrics();
        handle.schedule_once(Duration::ZERO, || panic!("timer boom")).unwrap();
        handle.post(|| panic!("post boom")).unwrap();
        let repeating = handle
            .schedule_repeating(Duration::from_millis(1), || panic!("repeating boom"))
            .unwrap();
        barrier(&handle, Duration::from_millis(20));
        assert!(!repeating.is_pending(), "a panicking repeating timer ends");
        let after = event_loop.metrics();
        assert_eq!(after.task_panics - before.task_panics, 3);

        let mut client = connect(addr_of(&server));
        client.write_all(b"still serving").unwrap();
        assert_eq!(read_exact_within(&mut client, 13, WAIT), b"still serving");
        let (tx, rx) = mpsc::channel();
        handle.schedule_once(Duration::from_millis(1), move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(WAIT).expect("timers still run");
    }

    /// Zero periods are refused; after `stop`, posts and timers are refused with
    /// `EventLoopGone`, and timers that were waiting are dropped unrun.
    fn refusals_and_stopped_loops(backend: Backend) {
        let event_loop = event_loop(backend);
        let handle = event_loop.handle(0).unwrap();
        let err = handle.schedule_repeating(Duration::ZERO, || {}).expect_err("zero period");
        assert!(matches!(
            network_error(err.as_ref()),
            NetworkError::Configuration(ConfigError::Zero(_))
        ));
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        let waiting = handle
            .schedule_once(Duration::from_secs(3600), move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        event_loop.stop();
        assert!(handle.is_stopped());
        assert!(!waiting.is_pending(), "a timer left when the loop stopped is dropped");
        assert!(!waiting.cancel());
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        let err = handle.post(|| {}).expect_err("post after stop");
        assert!(matches!(network_error(err.as_ref()), NetworkError::EventLoopGone));
        assert!(handle.schedule_once(Duration::ZERO, || {}).is_err());
    }

    /// A closure that posts and schedules from the loop thread itself is served promptly
    /// (nothing wakes a loop for its own commands, so the loop must not block on them).
    fn closures_chain_on_the_loop_thread(backend: Backend) {
        let event_loop = event_loop_with(backend, |b| b.threads(1));
        let handle = event_loop.handle(0).unwrap();
        let (tx, rx) = mpsc::channel();
        handle
            .post(move || {
                let me = LoopHandle::current().expect("on a loop");
                assert!(me.is_current());
                let me2 = me.clone();
                me.post(move || {
                    me2.schedule_once(Duration::ZERO, move || {
                        tx.send(thread_name()).unwrap();
                    })
                    .unwrap();
                })
                .unwrap();
            })
            .unwrap();
        assert_eq!(rx.recv_timeout(WAIT).expect("the chain ran"), "ringmill-loop-0");
    }
}
