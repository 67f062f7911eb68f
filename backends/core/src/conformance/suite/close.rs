//! Closing: exactly one `Closed` with operations in flight, dropping a driver, slot reuse,
//! close right after `register` or `connect`.

use crate::config::DriverConfig;
use crate::conformance::harness::*;
use crate::driver::{Driver, Flow, ListenerId, Slot};
use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

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
