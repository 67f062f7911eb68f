//! The mio driver against the driver contract, driven through the `Driver` trait alone.

mod common;

use common::*;
use ringmill_core::driver::{Driver, Flow, ListenerId, Slot};
use ringmill_core::DriverConfig;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// A short wait during which nothing may arrive (a check that something does *not* happen;
/// never used to wait for something that should).
const QUIET: Duration = Duration::from_millis(100);

fn received_bytes(evs: &[Ev], slot: Slot) -> Vec<u8> {
    let mut bytes = Vec::new();
    for ev in evs {
        if let Ev::Received(s, Ok(b)) = ev {
            if *s == slot {
                bytes.extend_from_slice(b);
            }
        }
    }
    bytes
}

fn assert_quiet(driver: &mut ringmill_mio::MioDriver, what: &str) {
    for timeout in [Duration::ZERO, Duration::ZERO, QUIET] {
        let evs = poll_once(driver, timeout, &mut |_| Flow::Continue);
        assert!(evs.is_empty(), "{what}: got {evs:?}");
    }
}

#[test]
fn echoes_random_sizes_up_to_one_mib() {
    let server = EchoServer::start(EchoOptions {
        slice_len: 7000,
        ..EchoOptions::default()
    });
    let mut rng = Rng::new(0x5eed);
    let mut sizes = vec![1, 2, 100, 4095, 65_536, 65_537, 1 << 20];
    sizes.extend((0..6).map(|_| 1 + rng.below(1 << 20)));
    for size in &sizes {
        echo_roundtrip(server.addr, &rng.bytes(*size));
    }
    let stats = server.stop();
    assert_eq!(stats.accepted, sizes.len());
    assert_eq!(stats.closed, sizes.len());
    assert!(stats.counters.enters > 0 && stats.counters.events > 0);
}

#[test]
fn echoes_with_a_small_buffer_and_budget() {
    let server = EchoServer::start(EchoOptions {
        config: DriverConfig {
            buffer_size: 1000,
            read_budget: 3001,
            ..DriverConfig::default()
        },
        slice_len: 0,
        ..EchoOptions::default()
    });
    let mut rng = Rng::new(7);
    for size in [1, 999, 1000, 1001, 3001, 250_000, 1 << 20] {
        echo_roundtrip(server.addr, &rng.bytes(size));
    }
    server.stop();
}

#[test]
fn serves_fifty_concurrent_connections() {
    let server = EchoServer::start(EchoOptions {
        slice_len: 4096,
        ..EchoOptions::default()
    });
    let addr = server.addr;
    run_concurrently(50, move |i| {
        let mut rng = Rng::new(1000 + i as u64);
        let size = 1 + rng.below(256 * 1024);
        echo_roundtrip(addr, &rng.bytes(size));
    });
    let stats = server.stop();
    assert_eq!(stats.accepted, 50);
    assert_eq!(stats.closed, 50);
}

#[test]
fn pausing_on_every_read_loses_no_byte() {
    let server = EchoServer::start(EchoOptions {
        config: DriverConfig {
            buffer_size: 4096,
            ..DriverConfig::default()
        },
        pause_every_read: true,
        slice_len: 0,
    });
    let addr = server.addr;
    let mut rng = Rng::new(99);
    for size in [1, 5000, 300_000, 1 << 20] {
        echo_roundtrip(addr, &rng.bytes(size));
    }
    run_concurrently(8, move |i| {
        let mut rng = Rng::new(i as u64 + 1);
        echo_roundtrip(addr, &rng.bytes(200_000 + i));
    });
    let stats = server.stop();
    assert!(
        stats.pauses > 100,
        "the sink paused only {} times",
        stats.pauses
    );
}

#[test]
fn pause_keeps_unread_bytes_until_recv() {
    // A receive buffer of 4 bytes: the first read leaves bytes in the kernel, and no new
    // edge will announce them.
    let mut driver = driver(&DriverConfig {
        buffer_size: 4,
        ..DriverConfig::default()
    });
    let addr = listen(&mut driver, ListenerId(0));
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    accept_as(&mut driver, Slot(0));
    client.write_all(b"hello world!").unwrap();

    // The sink answers Pause to the first read.
    let mut paused = false;
    let evs = poll_until_answering(
        &mut driver,
        &mut |ev| {
            if matches!(ev, Ev::Received(..)) {
                assert!(!paused, "Received after Pause: {ev:?}");
                paused = true;
                Flow::Pause
            } else {
                Flow::Continue
            }
        },
        &mut |evs| evs.iter().any(|ev| matches!(ev, Ev::Received(..))),
    );
    assert_eq!(received_bytes(&evs, Slot(0)), b"hell");
    assert_quiet(&mut driver, "paused by the sink");

    // Resuming reads the rest, which the kernel kept, without a new edge: the next poll
    // must not block although its timeout is long.
    driver.recv(Slot(0));
    let evs = poll_once(&mut driver, DEADLINE, &mut |_| Flow::Continue);
    assert_eq!(received_bytes(&evs, Slot(0)), b"o world!");

    // pause_recv holds new bytes back too.
    driver.pause_recv(Slot(0));
    client.write_all(b"more bytes").unwrap();
    assert_quiet(&mut driver, "paused by pause_recv");
    driver.recv(Slot(0));
    let evs = poll_until(&mut driver, |evs| received_bytes(evs, Slot(0)).len() >= 10);
    assert_eq!(received_bytes(&evs, Slot(0)), b"more bytes");

    // End of stream is reported once, and nothing follows it.
    client.shutdown(Shutdown::Write).unwrap();
    let evs = poll_until(&mut driver, |evs| {
        evs.iter()
            .any(|ev| matches!(ev, Ev::Received(_, Ok(b)) if b.is_empty()))
    });
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_quiet(&mut driver, "after end of stream");

    driver.close(Slot(0));
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    assert!(matches!(evs[..], [Ev::Closed(Slot(0))]), "{evs:?}");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn close_reports_exactly_one_closed_and_nothing_else() {
    let mut driver = driver(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let big = vec![0x5a_u8; 32 << 20];

    // Slot 0: a short send whose Sent is still queued, and unread incoming bytes.
    let mut client0 = TcpStream::connect(addr).unwrap();
    accept_as(&mut driver, Slot(0));
    // Slot 1: a send that waits for a writable event.
    let mut client1 = TcpStream::connect(addr).unwrap();
    accept_as(&mut driver, Slot(1));

    // SAFETY: `big` outlives every completion of both slots (it lives to the end of the
    // test) and is not changed.
    unsafe { driver.send(Slot(1), &[IoSlice::new(&big)]) };
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    let first = match &evs[..] {
        [Ev::Sent(Slot(1), Ok(n))] => *n,
        other => panic!("expected one short Sent, got {other:?}"),
    };
    assert!(
        first > 0 && first < big.len(),
        "send was not short: {first}"
    );
    // SAFETY: as above.
    unsafe { driver.send(Slot(1), &[IoSlice::new(&big[first..])]) };
    assert_quiet(&mut driver, "a blocked send");

    client0.write_all(b"unread").unwrap();
    // SAFETY: as above.
    unsafe { driver.send(Slot(0), &[IoSlice::new(&big)]) };
    driver.pause_recv(Slot(0));
    driver.close(Slot(0));
    driver.close(Slot(1));

    // The peers now read and write, which would make both sockets ready.
    client1.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let _ = client1.read(&mut sink);
    let _ = client1.write_all(b"late");
    let _ = client0.write_all(b"late");

    let mut evs = poll_until(&mut driver, |evs| {
        evs.iter().filter(|ev| matches!(ev, Ev::Closed(_))).count() >= 2
    });
    for _ in 0..3 {
        evs.extend(poll_once(&mut driver, QUIET, &mut |_| Flow::Continue));
    }
    for slot in [Slot(0), Slot(1)] {
        let of_slot: Vec<_> = evs.iter().filter(|ev| ev.slot() == Some(slot)).collect();
        assert!(
            matches!(of_slot[..], [Ev::Closed(_)]),
            "{slot:?} got {of_slot:?}"
        );
    }

    // The sockets are really closed: both peers see the end (or a reset).
    for client in [&mut client0, &mut client1] {
        client.set_read_timeout(Some(DEADLINE)).unwrap();
        loop {
            match client.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => break,
                Err(err) => panic!("peer did not see the close: {err}"),
            }
        }
    }
    drop(big);
}

#[test]
fn slots_are_reusable_after_closed() {
    let mut driver = driver(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    for round in 0..3u8 {
        let mut client = TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(DEADLINE)).unwrap();
        accept_as(&mut driver, Slot(0));
        client.write_all(&[round]).unwrap();
        let evs = poll_until(&mut driver, |evs| !received_bytes(evs, Slot(0)).is_empty());
        assert_eq!(received_bytes(&evs, Slot(0)), [round]);
        let reply = [round, round];
        // SAFETY: `reply` lives until the `Sent` below has been seen.
        unsafe { driver.send(Slot(0), &[IoSlice::new(&reply)]) };
        let evs = poll_until(&mut driver, |evs| !evs.is_empty());
        assert!(matches!(evs[..], [Ev::Sent(Slot(0), Ok(2))]), "{evs:?}");
        let mut got = [0u8; 2];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, reply);
        driver.close(Slot(0));
        let evs = poll_until(&mut driver, |evs| !evs.is_empty());
        assert!(matches!(evs[..], [Ev::Closed(Slot(0))]), "{evs:?}");
    }
}

#[test]
fn waker_wakes_a_blocked_poll_from_another_thread() {
    let (waker_tx, waker_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let looper = thread::spawn(move || {
        let mut driver = driver(&DriverConfig::default());
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
    assert!(counters.wakeups >= 1, "{counters:?}");
    assert!(counters.enters >= 1, "{counters:?}");
}

#[test]
fn a_poll_with_a_zero_timeout_does_not_block() {
    let mut driver = driver(&DriverConfig::default());
    let evs = poll_once(&mut driver, Duration::ZERO, &mut |_| Flow::Continue);
    assert!(evs.is_empty());
    assert_eq!(driver.counters().enters, 1);
}

#[test]
fn connect_to_a_closed_port_reports_an_error() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut driver = driver(&DriverConfig::default());
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    driver.connect(Slot(3), socket, addr).expect("connect");
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    match &evs[..] {
        [Ev::Connected(Slot(3), Err(err))] => {
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        }
        other => panic!("expected a failed Connected, got {other:?}"),
    }
    assert_quiet(&mut driver, "after a failed connect");
    driver.close(Slot(3));
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    assert!(matches!(evs[..], [Ev::Closed(Slot(3))]), "{evs:?}");
}

#[test]
fn connect_then_send_and_receive() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut driver = driver(&DriverConfig::default());
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    driver
        .connect(Slot(0), socket, listener.local_addr().unwrap())
        .expect("connect");
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    assert!(
        matches!(evs[..], [Ev::Connected(Slot(0), Ok(()))]),
        "{evs:?}"
    );
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();

    let (a, b) = (b"pi".to_vec(), b"ng".to_vec());
    // SAFETY: `a` and `b` live until the `Sent` below has been seen.
    unsafe { driver.send(Slot(0), &[IoSlice::new(&a), IoSlice::new(&b)]) };
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    assert!(matches!(evs[..], [Ev::Sent(Slot(0), Ok(4))]), "{evs:?}");
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");

    driver.recv(Slot(0));
    peer.write_all(b"pong").unwrap();
    let evs = poll_until(&mut driver, |evs| received_bytes(evs, Slot(0)).len() >= 4);
    assert_eq!(received_bytes(&evs, Slot(0)), b"pong");
}

#[test]
fn accept_pause_holds_until_resume_and_unlisten_closes() {
    let mut driver = driver(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(7));
    // Both connections wait in the backlog before the first poll: one edge for both.
    let _a = TcpStream::connect(addr).unwrap();
    let _b = TcpStream::connect(addr).unwrap();
    let mut accepted = 0;
    let evs = poll_until_answering(
        &mut driver,
        &mut |ev| match ev {
            Ev::Accepted(ListenerId(7), Ok(_)) => {
                accepted += 1;
                assert_eq!(accepted, 1, "Accepted after Pause");
                Flow::Pause
            }
            other => panic!("unexpected {other:?}"),
        },
        &mut |evs| !evs.is_empty(),
    );
    assert_eq!(evs.len(), 1);
    assert_quiet(&mut driver, "accepting paused");

    // No new connection arrives: resuming alone must find the waiting one, and the next
    // poll must not block although its timeout is long.
    driver.resume_accept(ListenerId(7));
    let evs = poll_once(&mut driver, DEADLINE, &mut |_| Flow::Continue);
    assert!(
        matches!(evs[..], [Ev::Accepted(ListenerId(7), Ok(_))]),
        "{evs:?}"
    );

    driver.unlisten(ListenerId(7));
    let err = TcpStream::connect(addr).expect_err("connect after unlisten");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    assert_quiet(&mut driver, "after unlisten");
}

#[test]
fn read_budget_lets_two_busy_connections_progress_together() {
    const BUDGET: usize = 64;
    const WANT: usize = 32 * 1024;
    let mut driver = driver(&DriverConfig {
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
}

#[test]
fn a_blocked_send_completes_when_the_socket_turns_writable() {
    let mut driver = driver(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    accept_as(&mut driver, Slot(0));
    let mut rng = Rng::new(11);
    let big = rng.bytes(32 << 20);

    // The first send fills the socket buffers and is short; the second cannot write
    // anything and waits.
    // SAFETY: `big` outlives every completion of the slot and is not changed.
    unsafe { driver.send(Slot(0), &[IoSlice::new(&big)]) };
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    let mut done = match &evs[..] {
        [Ev::Sent(Slot(0), Ok(n))] if *n > 0 && *n < big.len() => *n,
        other => panic!("expected one short Sent, got {other:?}"),
    };
    // SAFETY: as above.
    unsafe { driver.send(Slot(0), &[IoSlice::new(&big[done..])]) };
    assert_quiet(&mut driver, "a send on a full socket");

    // The peer reads everything; each writable edge lets the driver finish a send.
    let expected = big.clone();
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).expect("peer read");
        assert!(got == expected, "the peer read different bytes");
    });
    let mut sends = 2;
    loop {
        let evs = poll_until(&mut driver, |evs| !evs.is_empty());
        match &evs[..] {
            [Ev::Sent(Slot(0), Ok(n))] if *n > 0 => done += n,
            other => panic!("expected one Sent, got {other:?}"),
        }
        if done == big.len() {
            break;
        }
        sends += 1;
        // SAFETY: as above.
        unsafe { driver.send(Slot(0), &[IoSlice::new(&big[done..])]) };
    }
    reader.join().unwrap();
    assert!(sends > 2, "the whole buffer went out in {sends} sends");
}
