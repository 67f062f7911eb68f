//! Polling with deadlines, quiet checks, closing and accepting through the driver.

use super::*;
use crate::driver::{Driver, Flow, Slot};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One `poll` with `timeout`; every completion is copied and answered by `answer`.
pub fn poll_once<D: Driver>(
    driver: &mut D,
    timeout: Duration,
    answer: &mut dyn FnMut(&Ev) -> Flow,
) -> Vec<Ev> {
    let mut out = Vec::new();
    driver
        .poll(Some(timeout), |completion| {
            let ev = Ev::from_completion(completion);
            let flow = answer(&ev);
            out.push(ev);
            flow
        })
        .expect("poll");
    out
}

/// Polls (answering `Continue`) until `done` holds for the completions collected so far;
/// fails the test after [`DEADLINE`].
pub fn poll_until<D: Driver>(driver: &mut D, mut done: impl FnMut(&[Ev]) -> bool) -> Vec<Ev> {
    poll_until_answering(driver, &mut |_| Flow::Continue, &mut done)
}

/// Like [`poll_until`], with `answer` deciding the flow.
pub fn poll_until_answering<D: Driver>(
    driver: &mut D,
    answer: &mut dyn FnMut(&Ev) -> Flow,
    done: &mut dyn FnMut(&[Ev]) -> bool,
) -> Vec<Ev> {
    let deadline = Instant::now() + DEADLINE;
    let mut all = Vec::new();
    while !done(&all) {
        let now = Instant::now();
        assert!(
            now < deadline,
            "deadline passed waiting for completions; got {all:?}"
        );
        let evs = poll_once(
            driver,
            (deadline - now).min(Duration::from_millis(200)),
            answer,
        );
        all.extend(evs);
    }
    all
}

/// Polls a few times (two without blocking, one for [`QUIET`]) and fails if anything
/// arrives.
pub fn assert_quiet<D: Driver>(driver: &mut D, what: &str) {
    for timeout in [Duration::ZERO, Duration::ZERO, QUIET] {
        let evs = poll_once(driver, timeout, &mut |_| Flow::Continue);
        assert!(evs.is_empty(), "{what}: got {evs:?}");
    }
}

/// Closes `slot` and waits for its one `Closed`; any other completion of `slot` meanwhile,
/// or a second `Closed`, fails the test. Returns the completions of other slots.
pub fn close_and_wait<D: Driver>(driver: &mut D, slot: Slot) -> Vec<Ev> {
    driver.close(slot);
    let evs = poll_until(driver, |evs| {
        evs.iter()
            .any(|ev| matches!(ev, Ev::Closed(s) if *s == slot))
    });
    let mut others = Vec::new();
    let mut closed = 0;
    for ev in evs {
        match ev.slot() {
            Some(s) if s == slot => {
                assert!(matches!(ev, Ev::Closed(_)), "{ev:?} after close");
                closed += 1;
                assert_eq!(closed, 1, "a second Closed for {slot:?}");
            }
            _ => others.push(ev),
        }
    }
    for ev in poll_once(driver, Duration::ZERO, &mut |_| Flow::Continue) {
        assert_ne!(ev.slot(), Some(slot), "{ev:?} after Closed");
        others.push(ev);
    }
    others
}

/// Accepts one connection on `driver` (which must have a listener) and registers it as
/// `slot`, with receiving on. Returns the peer address the driver reported.
pub fn accept_as<D: Driver>(driver: &mut D, slot: Slot) -> SocketAddr {
    let evs = poll_until(driver, |evs| {
        evs.iter().any(|ev| matches!(ev, Ev::Accepted(..)))
    });
    let mut accepted = None;
    for ev in evs {
        match ev {
            Ev::Accepted(_, result) if accepted.is_none() => {
                accepted = Some(result.expect("accept"));
            }
            other => panic!("unexpected completion while accepting: {other:?}"),
        }
    }
    let (stream, peer) = accepted.unwrap();
    driver
        .register(slot, stream)
        .expect("register accepted stream");
    driver.recv(slot);
    peer
}
