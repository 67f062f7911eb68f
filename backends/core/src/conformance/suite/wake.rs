//! Waking and timed polls.

use crate::config::DriverConfig;
use crate::conformance::harness::*;
use crate::driver::{Driver, Flow, ListenerId};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Rule 7: a `poll(None)` blocked on another thread returns after a wake, with no
/// completion, and counts the wake-up.
pub fn waker_wakes_a_blocked_poll<D: Driver>(make: impl Fn(&DriverConfig) -> D + Send + 'static) {
    let _serial = shared();
    let (waker_tx, waker_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let looper = thread::spawn(move || {
        let mut driver = make(&DriverConfig::default());
        waker_tx.send(driver.waker()).unwrap();
        let mut completions = 0;
        driver
            .poll(None, |_| {
                completions += 1;
                Flow::Continue
            })
            .unwrap();
        done_tx.send((completions, driver.counters())).unwrap();
    });
    let waker = waker_rx.recv_timeout(DEADLINE).expect("loop did not start");
    waker.wake().unwrap();
    let (completions, counters) = done_rx
        .recv_timeout(DEADLINE)
        .expect("poll(None) did not return after wake");
    looper.join().unwrap();
    assert_eq!(completions, 0);
    assert_eq!(counters.wakeups, 1, "{counters:?}");
}

/// Rule 7, repeatedly: every wake from another thread ends one long timed poll, and is
/// counted once (the counter proves the poll did not just time out).
pub fn every_wake_ends_one_timed_poll<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&small_config());
    let waker = driver.waker();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let t = thread::spawn(move || {
        while go_rx.recv().is_ok() {
            waker.wake().unwrap();
        }
    });
    for i in 1..=20 {
        go_tx.send(()).unwrap();
        // A poll returns after a completion, a wake or its timeout: with nothing else to
        // report, only the wake can end this one before its long timeout.
        driver
            .poll(Some(DEADLINE), |c| panic!("unexpected completion {c:?}"))
            .unwrap();
        assert_eq!(
            driver.counters().wakeups,
            i,
            "poll returned without counting the wake-up (it timed out, or counted twice)"
        );
    }
    drop(go_tx);
    t.join().unwrap();
}

/// `poll` with a zero timeout returns at once when nothing is ready.
pub fn zero_timeout_poll_does_not_block<D: Driver>(
    make: impl Fn(&DriverConfig) -> D + Send + 'static,
) {
    let _serial = shared();
    let (tx, rx) = mpsc::channel();
    let looper = thread::spawn(move || {
        let mut driver = make(&DriverConfig::default());
        let _addr = listen(&mut driver, ListenerId(0));
        let evs = poll_once(&mut driver, Duration::ZERO, &mut |_| Flow::Continue);
        tx.send(evs.len()).unwrap();
    });
    let n = rx.recv_timeout(DEADLINE).expect("poll(Some(0)) blocked");
    looper.join().unwrap();
    assert_eq!(n, 0);
}
