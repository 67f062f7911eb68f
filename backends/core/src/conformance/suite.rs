//! The contract tests, one function each, generic over the driver.

use super::harness::*;
use crate::config::DriverConfig;
use crate::driver::{Driver, Flow, ListenerId, Slot};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Accepts a connection, checks what `Accepted` hands over, echoes a few bytes through
/// `recv` and `send`, and closes.
pub fn accept_and_echo<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig::default());
    assert!(!driver.name().is_empty() && !driver.describe().is_empty());
    let addr = listen(&mut driver, ListenerId(3));
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    let (stream, peer) = match evs.into_iter().next() {
        Some(Ev::Accepted(ListenerId(3), Ok(accepted))) => accepted,
        other => panic!("expected one Accepted of listener 3, got {other:?}"),
    };
    assert_eq!(peer, client.local_addr().unwrap(), "the reported peer");
    assert_eq!(stream.peer_addr().unwrap(), peer);
    #[cfg(unix)]
    assert!(
        socket2::SockRef::from(&stream).nonblocking().unwrap(),
        "the accepted stream is blocking"
    );
    driver.register(Slot(5), stream).expect("register");
    assert_quiet(&mut driver, "registered without recv");
    client.write_all(b"hello").unwrap();
    assert_quiet(&mut driver, "bytes before recv");
    driver.recv(Slot(5));
    let evs = poll_until(&mut driver, |evs| received_bytes(evs, Slot(5)).len() >= 5);
    assert_eq!(received_bytes(&evs, Slot(5)), b"hello");
    let reply = b"hello back".to_vec();
    // SAFETY: `reply` lives until the `Sent` awaited below.
    unsafe { driver.send(Slot(5), &[IoSlice::new(&reply)]) };
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    assert!(matches!(evs[..], [Ev::Sent(Slot(5), Ok(10))]), "{evs:?}");
    let mut got = [0u8; 10];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello back");
    close_and_wait(&mut driver, Slot(5));
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

/// Echoes payloads of random sizes up to 1 MiB, all at once, sent as several slices per
/// request: short reads and short writes on both sides, nothing lost or reordered.
pub fn echo_random_sizes<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let driver = make(&DriverConfig::default());
    let sizes = [1, 2, 100, 4095, 65_536, 65_537, 1 << 20];
    let policy = Policy {
        slice_len: 7000,
        ..Policy::default()
    };
    let (stats, _) = echo_run(driver, policy, payloads(0x5eed, &sizes, 6, 1 << 20));
    assert!(stats.bytes > 0);
}

/// Echoes with 1000-byte receive buffers and a read budget of 3001 bytes.
pub fn echo_small_buffers<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let driver = make(&DriverConfig {
        buffer_size: 1000,
        read_budget: 3001,
        ..DriverConfig::default()
    });
    let sizes = [1, 999, 1000, 1001, 3001, 250_000, 1 << 20];
    echo_run(driver, Policy::default(), payloads(7, &sizes, 0, 1));
}

/// Echoes 100 concurrent connections.
pub fn echo_many_connections<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let driver = make(&DriverConfig {
        buffer_size: 16 * 1024,
        ..DriverConfig::default()
    });
    let policy = Policy {
        slice_len: 4096,
        ..Policy::default()
    };
    echo_run(driver, policy, payloads(100, &[], 100, 128 * 1024));
}

/// Answers `Flow::Pause` to every non-empty `Received` (resuming two turns later): no
/// `Received` while paused, every byte echoed in order.
pub fn echo_pausing_every_read<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let driver = make(&DriverConfig {
        buffer_size: 4096,
        ..DriverConfig::default()
    });
    let policy = Policy {
        pause_every: Some(1),
        ..Policy::default()
    };
    let sizes = [1, 5000, 300_000, 1 << 20];
    let (stats, _) = echo_run(driver, policy, payloads(99, &sizes, 8, 200_000));
    assert!(
        stats.pauses > 100,
        "the sink paused only {} times",
        stats.pauses
    );
}

/// Answers `Flow::Pause` to every third non-empty `Received`.
pub fn echo_pausing_every_third_read<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    echo_with_pauses(
        make,
        Policy {
            pause_every: Some(3),
            ..Policy::default()
        },
        400,
    );
}

/// Calls `pause_recv` after every second non-empty `Received`.
pub fn echo_pause_recv<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    echo_with_pauses(
        make,
        Policy {
            pause_recv_every: Some(2),
            ..Policy::default()
        },
        500,
    );
}

/// Echoes random payloads (seed `seed`) over 2 KiB buffers under `policy`, which must
/// pause at least once; every byte comes back (checked by `echo_run`).
fn echo_with_pauses<D: Driver>(make: impl Fn(&DriverConfig) -> D, policy: Policy, seed: u64) {
    let _serial = shared();
    let driver = make(&DriverConfig {
        buffer_size: 2048,
        buffer_count: 64,
        ..DriverConfig::default()
    });
    let (stats, _) = echo_run(driver, policy, payloads(seed, &[], 16, 512 * 1024));
    assert!(stats.pauses > 0);
}

/// Rule 3 in detail, with 4-byte receive buffers: bytes the kernel holds while paused
/// (by the sink or by `pause_recv`) come after the resume, without a new arrival;
/// end of stream is reported once and nothing follows it.
pub fn pause_keeps_unread_bytes_until_recv<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig {
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

    // Resuming delivers the rest, which the kernel kept, with no new bytes arriving.
    driver.recv(Slot(0));
    let evs = poll_until(&mut driver, |evs| received_bytes(evs, Slot(0)).len() >= 8);
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
        evs.iter().any(|ev| ev.is_eof_of(Slot(0)))
    });
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_quiet(&mut driver, "after end of stream");

    close_and_wait(&mut driver, Slot(0));
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

/// Rule 2: after end of stream, and after a receive error, no more `Received` for the
/// slot, even when `recv` is called again (as the core does when it resumes a connection).
pub fn nothing_received_after_the_end<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let mut ended = TcpStream::connect(addr).unwrap();
    accept_as(&mut driver, Slot(0));
    let reset = TcpStream::connect(addr).unwrap();
    accept_as(&mut driver, Slot(1));
    ended.write_all(b"last").unwrap();
    ended.shutdown(Shutdown::Write).unwrap();
    socket2::SockRef::from(&reset)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(reset);
    let evs = poll_until(&mut driver, |evs| {
        evs.iter().any(|ev| ev.is_eof_of(Slot(0)))
            && evs
                .iter()
                .any(|ev| matches!(ev, Ev::Received(Slot(1), Err(_))))
    });
    assert_eq!(received_bytes(&evs, Slot(0)), b"last");
    let ends = evs
        .iter()
        .filter(|ev| ev.is_eof_of(Slot(0)) || matches!(ev, Ev::Received(Slot(1), Err(_))))
        .count();
    assert_eq!(ends, 2, "{evs:?}");
    assert!(
        evs.iter()
            .all(|ev| !matches!(ev, Ev::Received(Slot(1), Ok(b)) if b.is_empty())),
        "{evs:?}"
    );
    assert_quiet(&mut driver, "after the ends");
    driver.recv(Slot(0));
    driver.recv(Slot(1));
    assert_quiet(&mut driver, "recv called after the ends");
    driver.pause_recv(Slot(0));
    driver.recv(Slot(0));
    assert_quiet(&mut driver, "paused and resumed after the end");
    close_and_wait(&mut driver, Slot(0));
    close_and_wait(&mut driver, Slot(1));
    drop(ended);
}

/// The buffer rule: an idle connection holds no receive buffer, so a pool of 4 buffers
/// serves a connection that talks beside 40 idle ones with receiving on.
pub fn idle_connections_hold_no_buffer<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig {
        buffer_size: 4096,
        buffer_count: 4,
        ..DriverConfig::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut idle = Vec::new();
    for slot in 0..40 {
        let (peer, server) = socket_pair(&listener);
        driver.register(Slot(slot), server).unwrap();
        driver.recv(Slot(slot));
        idle.push(peer);
    }
    assert_quiet(&mut driver, "idle connections");
    assert_eq!(driver.counters().recv_buffers_out, 0);
    let (mut peer, server) = socket_pair(&listener);
    driver.register(Slot(40), server).unwrap();
    driver.recv(Slot(40));
    let payload = Rng::new(40).bytes(256 * 1024);
    let writer = {
        let payload = payload.clone();
        thread::spawn(move || {
            peer.write_all(&payload).unwrap();
            peer.shutdown(Shutdown::Write).unwrap();
            peer
        })
    };
    let evs = poll_until(&mut driver, |evs| {
        evs.iter().any(|ev| ev.is_eof_of(Slot(40)))
    });
    assert!(
        evs.iter().all(|ev| ev.slot() == Some(Slot(40))),
        "only slot 40 talked"
    );
    assert!(received_bytes(&evs, Slot(40)) == payload, "bytes differ");
    let _peer = writer.join().unwrap();
    for slot in 0..=40 {
        close_and_wait(&mut driver, Slot(slot));
    }
    assert_eq!(driver.counters().recv_buffers_out, 0);
}

/// Rule 1: closing two slots, one with a short send's `Sent` still undelivered, unread
/// input and receiving paused, the other with a send waiting for room, reports exactly one
/// `Closed` each and nothing else, although both peers then read and write; both peers see
/// the close.
pub fn close_reports_one_closed_and_nothing_else<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let big = vec![0x5a_u8; 32 << 20];

    let mut client0 = TcpStream::connect(addr).unwrap();
    accept_as(&mut driver, Slot(0));
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

/// Rule 1 and the buffer rule, 1000 times: close with a receive and one or two sends in
/// flight gives exactly one `Closed` and nothing after it; no descriptor leaks, and every
/// receive buffer comes back (the gauge returns to zero, and a fresh connection on a pool
/// of 8 buffers still gets all its bytes).
pub fn close_in_flight_many_times<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = exclusive();
    let config = DriverConfig {
        buffer_size: 4096,
        buffer_count: 8,
        ring_entries: 32,
        cq_entries: 128,
        ..DriverConfig::default()
    };
    let mut driver = make(&config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let big = vec![0xab_u8; 2 << 20];
    let before = open_fds();
    for i in 0..1000u32 {
        let (mut client, server) = socket_pair(&listener);
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(16 * 1024)
            .unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(16 * 1024)
            .unwrap();
        // Each reuse of an index comes in a new generation, as the core hands it out.
        let slot = Slot::new(i % 3, i / 3);
        driver.register(slot, server).unwrap();
        driver.recv(slot);
        // SAFETY: `big` outlives the whole test and is not changed.
        unsafe { driver.send(slot, &[IoSlice::new(&big)]) };
        if i % 2 == 1 {
            client.write_all(b"ping").unwrap();
        }
        if i % 4 >= 2 {
            // Let the operations start first; a short send makes room for a second one
            // that stays pending (the peer reads nothing).
            let mut sent = false;
            for ev in poll_once(&mut driver, Duration::ZERO, &mut |_| Flow::Continue) {
                match ev {
                    Ev::Sent(s, Ok(n)) if s == slot => {
                        assert!(
                            n < big.len(),
                            "the peer reads nothing, so the send is short"
                        );
                        sent = true;
                    }
                    Ev::Received(s, Ok(_)) if s == slot => {}
                    other => panic!("iteration {i}: unexpected {other:?}"),
                }
            }
            if sent {
                // SAFETY: as above.
                unsafe { driver.send(slot, &[IoSlice::new(&big)]) };
            }
        }
        let others = close_and_wait(&mut driver, slot);
        assert!(others.is_empty(), "iteration {i}: {others:?}");
        drop(client);
    }
    if let Some(before) = before {
        assert_eq!(open_fds(), Some(before), "descriptors leaked");
    }
    assert_eq!(
        driver.counters().recv_buffers_out,
        0,
        "receive buffers kept"
    );

    // Every receive buffer came back: a fresh connection still gets all its bytes.
    let (mut client, server) = socket_pair(&listener);
    driver.register(Slot(0), server).unwrap();
    driver.recv(Slot(0));
    let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    client.write_all(&payload).unwrap();
    drop(client);
    let evs = poll_until(&mut driver, |evs| {
        evs.iter().any(|ev| ev.is_eof_of(Slot(0)))
    });
    for ev in &evs {
        assert!(matches!(ev, Ev::Received(Slot(0), Ok(_))), "{ev:?}");
    }
    assert!(received_bytes(&evs, Slot(0)) == payload, "bytes differ");
    close_and_wait(&mut driver, Slot(0));
    assert_eq!(
        driver.counters().recv_buffers_out,
        0,
        "receive buffers kept"
    );
}

/// Dropping the driver with accepts, receives and sends in flight (and a close under way)
/// closes every descriptor it owns; its waker outlives it harmlessly.
pub fn drop_with_operations_in_flight<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = exclusive();
    let big = vec![1u8; 1 << 20];
    let before = open_fds();
    let mut clients = Vec::new();
    for round in 0..20 {
        let mut driver = make(&DriverConfig {
            buffer_size: 4096,
            buffer_count: 8,
            ..DriverConfig::default()
        });
        let waker = driver.waker();
        let addr = listen(&mut driver, ListenerId(0));
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).unwrap());
        }
        let evs = poll_until(&mut driver, |evs| evs.len() >= 3);
        for (slot, ev) in (0..).zip(evs) {
            let Ev::Accepted(_, Ok((stream, _))) = ev else {
                panic!("round {round}: unexpected {ev:?}");
            };
            socket2::SockRef::from(&stream)
                .set_send_buffer_size(16 * 1024)
                .unwrap();
            driver.register(Slot(slot), stream).unwrap();
            driver.recv(Slot(slot));
            // SAFETY: `big` outlives the driver and is not changed.
            unsafe { driver.send(Slot(slot), &[IoSlice::new(&big)]) };
        }
        // One more connection waits in the backlog.
        clients.push(TcpStream::connect(addr).unwrap());
        if round % 2 == 0 {
            driver.close(Slot(0));
        }
        if round % 4 < 2 {
            poll_once(&mut driver, Duration::ZERO, &mut |_| Flow::Continue);
        }
        drop(driver);
        waker.wake().unwrap();
        drop(waker);
    }
    drop(clients);
    if let Some(before) = before {
        assert_eq!(open_fds(), Some(before), "descriptors leaked");
    }
}

/// A slot is the core's again after `Closed` and can name a new connection.
pub fn slots_are_reusable_after_closed<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig::default());
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
        close_and_wait(&mut driver, Slot(0));
    }
}

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

/// A connect to a closed port reports one failed `Connected` (refused) and nothing else;
/// the slot then closes with one `Closed`.
pub fn connect_refused<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut driver = make(&small_config());
    driver
        .connect(Slot(3), tcp_socket(addr), addr)
        .expect("connect");
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    match &evs[..] {
        [Ev::Connected(Slot(3), Err(err))] => {
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        }
        other => panic!("expected a failed Connected, got {other:?}"),
    }
    assert_quiet(&mut driver, "after a failed connect");
    close_and_wait(&mut driver, Slot(3));
}

/// Rule 1 at the start of a connection's life: `close` right after `register` (nothing
/// read yet) or right after `connect` (its `Connected` not reported yet) gives exactly one
/// `Closed` and nothing else (no `Connected`), and the peers see the close.
pub fn close_right_after_register_or_connect<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut driver = make(&small_config());
    for round in 0..20u32 {
        let (mut peer, server) = socket_pair(&listener);
        peer.write_all(b"unread").unwrap();
        driver.register(Slot(0), server).expect("register");
        if round % 2 == 1 {
            driver.recv(Slot(0));
        }
        driver
            .connect(Slot(1), tcp_socket(addr), addr)
            .expect("connect");
        if round % 4 >= 2 {
            for ev in poll_once(&mut driver, Duration::ZERO, &mut |_| Flow::Continue) {
                // The connect may be reported before the close; nothing else may be.
                match ev {
                    Ev::Connected(Slot(1), Ok(())) => {}
                    Ev::Received(Slot(0), Ok(_)) if round % 2 == 1 => {}
                    other => panic!("round {round}: unexpected {other:?}"),
                }
            }
        }
        driver.close(Slot(0));
        driver.close(Slot(1));
        let evs = poll_until(&mut driver, |evs| {
            evs.iter().filter(|ev| matches!(ev, Ev::Closed(_))).count() >= 2
        });
        for slot in [Slot(0), Slot(1)] {
            let of_slot: Vec<_> = evs.iter().filter(|ev| ev.slot() == Some(slot)).collect();
            assert!(
                matches!(of_slot[..], [Ev::Closed(_)]),
                "round {round}, {slot:?}: {of_slot:?}"
            );
        }
        assert_quiet(&mut driver, "after both Closed");
        peer.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut rest = Vec::new();
        match peer.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty()),
            Err(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}"),
        }
        // The connecting side's peer (if the handshake got that far) sees the end too.
        listener.set_nonblocking(true).unwrap();
        while let Ok((mut accepted, _)) = listener.accept() {
            accepted.set_nonblocking(false).unwrap();
            accepted.set_read_timeout(Some(DEADLINE)).unwrap();
            match accepted.read_to_end(&mut rest) {
                Ok(_) => assert!(rest.is_empty()),
                Err(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}"),
            }
        }
        listener.set_nonblocking(false).unwrap();
    }
}

/// A connect that succeeds: one `Connected`, then a two-slice send, a receive, the
/// peer's end of stream, and a close.
pub fn connect_and_exchange<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut driver = make(&small_config());
    driver
        .connect(Slot(0), tcp_socket(addr), addr)
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
    drop(peer);
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    assert!(evs[0].is_eof_of(Slot(0)), "{evs:?}");
    close_and_wait(&mut driver, Slot(0));
}

/// `shutdown_write`: the peer reads every byte sent before it, then end of stream, and
/// receiving goes on.
pub fn shutdown_write_sends_fin_after_the_bytes<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    accept_as(&mut driver, Slot(0));
    let data = Rng::new(17).bytes(300_000);
    let mut done = 0;
    let reader = {
        let mut client = client.try_clone().unwrap();
        thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).map(|_| got)
        })
    };
    while done < data.len() {
        // SAFETY: `data` lives to the end of the test and is not changed.
        unsafe { driver.send(Slot(0), &[IoSlice::new(&data[done..])]) };
        let evs = poll_until(&mut driver, |evs| !evs.is_empty());
        match &evs[..] {
            [Ev::Sent(Slot(0), Ok(n))] if *n > 0 => done += n,
            other => panic!("expected one Sent, got {other:?}"),
        }
    }
    driver.shutdown_write(Slot(0));
    let got = reader.join().unwrap().expect("peer read to end of stream");
    assert!(
        got == data,
        "the peer read {} bytes, not the ones sent",
        got.len()
    );
    client.write_all(b"after fin").unwrap();
    let evs = poll_until(&mut driver, |evs| received_bytes(evs, Slot(0)).len() >= 9);
    assert_eq!(received_bytes(&evs, Slot(0)), b"after fin");
    client.shutdown(Shutdown::Write).unwrap();
    poll_until(&mut driver, |evs| {
        evs.iter().any(|ev| ev.is_eof_of(Slot(0)))
    });
    close_and_wait(&mut driver, Slot(0));
}

/// Rule 3 for accepts: after a `Pause` answer nothing is accepted, although connections
/// wait (some arrived before the pause, some after); `resume_accept` alone delivers them
/// all, each a non-blocking stream with its peer's address.
pub fn accept_pause_and_resume<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&small_config());
    let addr = listen(&mut driver, ListenerId(7));
    // Two connections wait in the backlog before the first poll.
    let mut peers = vec![
        TcpStream::connect(addr).unwrap(),
        TcpStream::connect(addr).unwrap(),
    ];
    let mut accepted = Vec::new();
    poll_until_answering(
        &mut driver,
        &mut |ev| match ev {
            Ev::Accepted(ListenerId(7), Ok((_, peer))) => {
                accepted.push(*peer);
                assert_eq!(accepted.len(), 1, "Accepted after Pause");
                Flow::Pause
            }
            other => panic!("unexpected {other:?}"),
        },
        &mut |evs| !evs.is_empty(),
    );
    assert_quiet(&mut driver, "accepting paused");
    peers.extend((0..3).map(|_| TcpStream::connect(addr).unwrap()));
    assert_quiet(&mut driver, "accepting paused, new connections");

    driver.resume_accept(ListenerId(7));
    let evs = poll_until(&mut driver, |evs| evs.len() + accepted.len() >= peers.len());
    for ev in evs {
        match ev {
            Ev::Accepted(ListenerId(7), Ok((stream, peer))) => {
                assert_eq!(stream.peer_addr().unwrap(), peer);
                #[cfg(unix)]
                assert!(
                    socket2::SockRef::from(&stream).nonblocking().unwrap(),
                    "the accepted stream is blocking"
                );
                accepted.push(peer);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut want: Vec<SocketAddr> = peers.iter().map(|p| p.local_addr().unwrap()).collect();
    want.sort();
    accepted.sort();
    assert_eq!(accepted, want);
}

/// `unlisten` closes the listening socket (connecting is refused once the driver let go)
/// and stops `Accepted`; unknown listener ids are ignored.
pub fn unlisten_closes_the_listener<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&small_config());
    let addr = listen(&mut driver, ListenerId(1));
    let _c = TcpStream::connect(addr).unwrap();
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    assert!(
        matches!(evs[..], [Ev::Accepted(ListenerId(1), Ok(_))]),
        "{evs:?}"
    );
    driver.unlisten(ListenerId(1));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let evs = poll_once(&mut driver, Duration::from_millis(20), &mut |_| {
            Flow::Continue
        });
        assert!(evs.is_empty(), "delivered after unlisten: {evs:?}");
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
            Err(e) => panic!("{e}"),
            Ok(_) => assert!(Instant::now() < deadline, "listener still open"),
        }
    }
    driver.unlisten(ListenerId(1));
    driver.resume_accept(ListenerId(99));
    assert_quiet(&mut driver, "after unlisten");
}

/// Rule 4: a send on a full socket is short, a further one waits (no `Sent`) until the
/// peer reads, and every byte arrives once, in order.
pub fn blocked_send_completes_when_writable<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    accept_as(&mut driver, Slot(0));
    let big = Rng::new(11).bytes(32 << 20);

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
    assert!(
        sends > 2,
        "the rest went out in one send although the peer was still reading: {sends} sends"
    );
    close_and_wait(&mut driver, Slot(0));
}

/// Rule 4's `MSG_NOSIGNAL`: with SIGPIPE's default action (which kills the process),
/// sends to a peer that reset the connection fail with an error, the last with
/// `BrokenPipe`, and the process lives. The reset itself ends the receive with an error.
#[cfg(unix)]
pub fn send_to_a_vanished_peer_raises_no_sigpipe<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = exclusive();
    fn disposition() -> libc::sighandler_t {
        // SAFETY: an all-zero `sigaction` is a valid out-parameter, and a null new action
        // only queries the current one.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            assert_eq!(
                libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old),
                0
            );
            old.sa_sigaction
        }
    }
    struct Restore(libc::sighandler_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: puts back the disposition found at the start (a plain action).
            unsafe { libc::signal(libc::SIGPIPE, self.0) };
        }
    }
    // SAFETY: sets the default action for SIGPIPE; no handler is installed.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR);
    let _restore = Restore(previous);
    assert_eq!(disposition(), libc::SIG_DFL);

    let mut driver = make(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let client = TcpStream::connect(addr).unwrap();
    accept_as(&mut driver, Slot(0));
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    match &evs[..] {
        [Ev::Received(Slot(0), Err(err))] => {
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        }
        other => panic!("expected the reset to be received, got {other:?}"),
    }
    let data = vec![1u8; 64 * 1024];
    let mut errors = Vec::new();
    for _ in 0..2 {
        // SAFETY: `data` lives until the `Sent` below has been seen.
        unsafe { driver.send(Slot(0), &[IoSlice::new(&data)]) };
        let evs = poll_until(&mut driver, |evs| !evs.is_empty());
        match <[Ev; 1]>::try_from(evs) {
            Ok([Ev::Sent(Slot(0), Err(err))]) => errors.push(err.kind()),
            other => panic!("expected one failed Sent, got {other:?}"),
        }
    }
    assert_eq!(
        errors.last(),
        Some(&io::ErrorKind::BrokenPipe),
        "{errors:?}"
    );
    assert_eq!(disposition(), libc::SIG_DFL);
    close_and_wait(&mut driver, Slot(0));
}

#[cfg(unix)]
extern "C" fn ignore_signal(_: libc::c_int) {}

/// Rule 6: signals (a handler without `SA_RESTART`) hitting a thread blocked in
/// `poll(None)` never surface as `EINTR` nor end the poll early.
#[cfg(unix)]
pub fn interrupted_polls_are_retried<D: Driver>(
    make: impl Fn(&DriverConfig) -> D + Send + 'static,
) {
    use std::os::unix::thread::JoinHandleExt;
    let _serial = shared();
    // SAFETY: installs a handler that does nothing; the struct is fully initialised.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let (waker_tx, waker_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let mut driver = make(&small_config());
        waker_tx.send(driver.waker()).unwrap();
        let mut polls = 0;
        while driver.counters().wakeups == 0 {
            driver
                .poll(None, |c| panic!("unexpected completion {c:?}"))
                .expect("poll must retry interrupted waits");
            polls += 1;
        }
        done_tx.send(polls).unwrap();
    });
    let waker = waker_rx.recv_timeout(DEADLINE).unwrap();
    for _ in 0..200 {
        // SAFETY: the thread is alive (it ends only after the wake-up below).
        let rc = unsafe { libc::pthread_kill(handle.as_pthread_t(), libc::SIGUSR1) };
        assert_eq!(rc, 0);
        thread::yield_now();
    }
    waker.wake().unwrap();
    let polls = done_rx
        .recv_timeout(DEADLINE)
        .expect("loop thread did not finish after the wake-up");
    assert_eq!(
        polls, 1,
        "a signal ended poll(None) without a completion or wake-up"
    );
    handle.join().unwrap();
}

/// A broken call: `send` on a slot the driver does not own (never registered, an index in
/// use under another generation, or already `Closed`). The contract: no completion at all
/// for it, the same in every build, and the driver goes on serving its other slots (the
/// live connection at that index included).
pub fn send_on_an_unknown_slot<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let live = Slot::new(0, 4);
    accept_as(&mut driver, live);
    let bytes = b"stray".to_vec();
    for stray in [Slot(9), Slot(1000), Slot::new(0, 3), Slot::new(0, 5)] {
        // SAFETY: `bytes` lives to the end of the test.
        unsafe { driver.send(stray, &[IoSlice::new(&bytes)]) };
        assert_quiet(&mut driver, &format!("after a send on unknown {stray:?}"));
    }
    // The driver still serves the live slot, and sent nothing on it.
    client.write_all(b"x").unwrap();
    let evs = poll_until(&mut driver, |evs| !received_bytes(evs, live).is_empty());
    assert!(evs.iter().all(|ev| ev.slot() == Some(live)), "{evs:?}");
    assert!(
        evs.iter().all(|ev| matches!(ev, Ev::Received(..))),
        "{evs:?}"
    );
    close_and_wait(&mut driver, live);
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got);
    assert!(got.is_empty(), "a stray send reached the peer: {got:?}");
    // A slot after its `Closed` is unknown too.
    // SAFETY: as above.
    unsafe { driver.send(live, &[IoSlice::new(&bytes)]) };
    assert_quiet(&mut driver, "after a send on a closed slot");
}

/// A broken call: a second `send` while one is in flight (its `Sent` not delivered yet),
/// whether the first one waits for room on a full socket or finished at once and only its
/// `Sent` is pending. The contract: the second send is refused with one failed `Sent`
/// (`InvalidInput`), the same in every build; the send in flight completes with exactly
/// one `Sent` of its own, as if alone; the peer reads exactly the bytes of the accepted
/// sends, in order; and the slot still closes with one `Closed`.
pub fn second_send_in_flight<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    accept_as(&mut driver, Slot(0));
    let small = b"small".to_vec();
    let big = Rng::new(23).bytes(32 << 20);
    let second = b"second".to_vec();

    // A send that the socket takes at once, and another before its `Sent` is delivered.
    // SAFETY: `small`, `big` and `second` live to the end of the test and are not changed.
    unsafe { driver.send(Slot(0), &[IoSlice::new(&small)]) };
    // SAFETY: as above (the call itself is the broken part under test).
    unsafe { driver.send(Slot(0), &[IoSlice::new(&second)]) };
    let evs = poll_until(&mut driver, |evs| {
        evs.iter().filter(|ev| matches!(ev, Ev::Sent(..))).count() >= 2
    });
    assert_one_refused(&evs, small.len());
    assert_quiet(&mut driver, "after the quick sends' outcomes");

    // The next send fills the socket and is short; the one after waits for room.
    // SAFETY: as above.
    unsafe { driver.send(Slot(0), &[IoSlice::new(&big)]) };
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    let first = match &evs[..] {
        [Ev::Sent(Slot(0), Ok(n))] if *n > 0 && *n < big.len() => *n,
        other => panic!("expected one short Sent, got {other:?}"),
    };
    // SAFETY: as above.
    unsafe { driver.send(Slot(0), &[IoSlice::new(&big[first..])]) };
    assert_quiet(&mut driver, "a send on a full socket");
    // SAFETY: as above (the call itself is the broken part under test).
    unsafe { driver.send(Slot(0), &[IoSlice::new(&second)]) };
    let reader = {
        let mut client = client.try_clone().unwrap();
        thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).map(|_| got)
        })
    };
    let evs = poll_until(&mut driver, |evs| {
        evs.iter().filter(|ev| matches!(ev, Ev::Sent(..))).count() >= 2
    });
    let rest = assert_one_refused(&evs, 0);
    let accepted = first + rest;
    assert_quiet(&mut driver, "after the sends' outcomes");
    close_and_wait(&mut driver, Slot(0));
    let got = reader.join().unwrap().expect("peer read to end of stream");
    assert_eq!(
        got.len(),
        small.len() + accepted,
        "the peer read other bytes than the accepted sends"
    );
    assert!(
        got[..small.len()] == small[..] && got[small.len()..] == big[..accepted],
        "the peer read other bytes than the accepted sends"
    );
}

/// Checks that `evs` hold exactly two `Sent` of slot 0 and nothing else: one failed with
/// `InvalidInput` (the refused send) and one that took bytes (`exactly` of them, unless
/// zero). Returns the bytes taken.
fn assert_one_refused(evs: &[Ev], exactly: usize) -> usize {
    assert!(
        evs.iter().all(|ev| matches!(ev, Ev::Sent(Slot(0), _))),
        "only the two sends' outcomes: {evs:?}"
    );
    let refused = evs
        .iter()
        .filter(|ev| matches!(ev, Ev::Sent(_, Err(e)) if e.kind() == io::ErrorKind::InvalidInput))
        .count();
    let taken: Vec<usize> = evs
        .iter()
        .filter_map(|ev| match ev {
            Ev::Sent(_, Ok(n)) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(
        (evs.len(), refused, taken.len()),
        (2, 1, 1),
        "one Sent for the send in flight and one InvalidInput for the refused one: {evs:?}"
    );
    if exactly > 0 {
        assert_eq!(taken[0], exactly, "the send in flight, whole: {evs:?}");
    }
    taken[0]
}
