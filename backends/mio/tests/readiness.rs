//! The mio driver's own behaviour, beyond the shared contract (which
//! `tests/conformance.rs` runs): its read budget, its counters, and `unlisten` closing the
//! listener at once.

mod common;

use common::MIO;
use ringmill_core::conformance::harness::*;
use ringmill_core::driver::{Driver, Flow, ListenerId, Slot};
use ringmill_core::DriverConfig;
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

#[test]
fn name_and_counters_of_an_echo_run() {
    MIO.run(|t| {
        let driver = t.driver(&DriverConfig::default());
        assert_eq!(driver.name(), "mio");
        let sizes = [1, 65_536, 1 << 20];
        let (stats, counters) =
            echo_run(driver, Policy::default(), payloads(1, &sizes, 3, 1 << 20));
        assert!(stats.bytes > 0);
        assert!(counters.enters > 0 && counters.events > 0, "{counters:?}");
        assert_eq!(
            counters.sqes + counters.cqes + counters.enobufs,
            0,
            "{counters:?}"
        );
    });
}

#[test]
fn a_poll_with_a_zero_timeout_enters_once() {
    MIO.run(|t| {
        let mut driver = t.driver(&DriverConfig::default());
        let evs = poll_once(&mut driver, Duration::ZERO, &mut |_| Flow::Continue);
        assert!(evs.is_empty());
        assert_eq!(driver.counters().enters, 1);
    });
}

#[test]
fn a_woken_poll_counts_its_enter() {
    MIO.run(|t| {
        let (waker_tx, waker_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let make = t.make;
        let looper = thread::spawn(move || {
            let mut driver = make(&DriverConfig::default());
            waker_tx.send(driver.waker()).unwrap();
            driver.poll(None, |_| Flow::Continue).unwrap();
            done_tx.send(driver.counters()).unwrap();
        });
        let waker = waker_rx.recv_timeout(DEADLINE).expect("loop did not start");
        waker.wake().unwrap();
        let counters = done_rx
            .recv_timeout(DEADLINE)
            .expect("poll(None) did not return after wake");
        looper.join().unwrap();
        assert!(counters.enters >= 1, "{counters:?}");
    });
}

/// mio closes the listening socket inside `unlisten` itself: connecting is refused at
/// once, before any poll.
#[test]
fn unlisten_refuses_connections_at_once() {
    MIO.run(|t| {
        let mut driver = t.driver(&DriverConfig::default());
        let addr = listen(&mut driver, ListenerId(7));
        driver.unlisten(ListenerId(7));
        let err = TcpStream::connect(addr).expect_err("connect after unlisten");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert_quiet(&mut driver, "after unlisten");
    });
}

/// `read_budget` bounds the bytes one connection gets per readiness event, so two busy
/// connections progress together.
#[test]
fn read_budget_lets_two_busy_connections_progress_together() {
    MIO.run(|t| {
        const BUDGET: usize = 64;
        const WANT: usize = 32 * 1024;
        let mut driver = t.driver(&DriverConfig {
            buffer_size: 4096,
            read_budget: BUDGET,
            ..DriverConfig::default()
        });
        let addr = listen(&mut driver, ListenerId(0));
        let mut clients = Vec::new();
        for slot in [Slot(0), Slot(1)] {
            clients.push(TcpStream::connect(addr).unwrap());
            accept_as(&mut driver, slot);
        }
        assert_quiet(&mut driver, "before any data");

        // Both peers queue their bytes before the driver reads any.
        let mut rng = Rng::new(3);
        let mut sent = Vec::new();
        for client in &mut clients {
            client.set_nonblocking(true).unwrap();
            let data = rng.bytes(WANT);
            let mut written = 0;
            while written < data.len() {
                match client.write(&data[written..]) {
                    Ok(n) => written += n,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) => panic!("client write: {err}"),
                }
            }
            assert!(
                written > BUDGET,
                "the peer could queue only {written} bytes"
            );
            sent.push(data[..written].to_vec());
        }

        let mut got = [Vec::new(), Vec::new()];
        let mut first_poll_with_data = true;
        while got[0].len() < sent[0].len() || got[1].len() < sent[1].len() {
            let evs = poll_until(&mut driver, |evs| !evs.is_empty());
            let mut this_poll = [0usize; 2];
            for ev in &evs {
                match ev {
                    Ev::Received(slot, Ok(bytes)) if !bytes.is_empty() => {
                        this_poll[slot.index()] += bytes.len();
                        got[slot.index()].extend_from_slice(bytes);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            for n in this_poll {
                assert!(n <= BUDGET, "{n} bytes from one connection in one poll");
            }
            if first_poll_with_data {
                first_poll_with_data = false;
                assert!(
                    this_poll[0] > 0 && this_poll[1] > 0,
                    "both were readable, but the first poll served {this_poll:?}"
                );
            }
            for i in 0..2 {
                if got[i].len() == sent[i].len() {
                    assert!(
                        !got[1 - i].is_empty(),
                        "connection {i} finished before the other got anything"
                    );
                }
            }
        }
        assert!(got[0] == sent[0] && got[1] == sent[1], "bytes differ");
    });
}
