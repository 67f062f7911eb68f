//! Receiving: unread bytes kept while paused, nothing after the end, idle connections
//! holding no buffer.

use crate::config::DriverConfig;
use crate::conformance::harness::*;
use crate::driver::{Driver, Flow, ListenerId, Slot};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

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
