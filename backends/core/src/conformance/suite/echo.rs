//! Echo through the driver: accepting, random sizes, small buffers, many connections, pausing.

use crate::config::DriverConfig;
use crate::conformance::harness::*;
use crate::driver::{Driver, ListenerId, Slot};
use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;

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

/// Echoes through the `WriteNow` a driver offers with `Received` (rule 8), sending only
/// what the socket did not take: every byte comes back in order, whichever way it went.
pub fn echo_write_now<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let driver = make(&DriverConfig::default());
    let policy = Policy {
        write_now: true,
        ..Policy::default()
    };
    let name = driver.name();
    let sizes = [1, 100, 4096, 65_536, 1 << 20];
    let (stats, _) = echo_run(driver, policy, payloads(0x0817e, &sizes, 8, 1 << 20));
    // Every driver of this project offers one: the echo must have used it.
    assert!(
        stats.written_now > 0,
        "{name}: no byte went through WriteNow (of {})",
        stats.bytes
    );
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
