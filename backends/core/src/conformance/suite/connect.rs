//! Connecting: refusal and a successful exchange.

use crate::config::DriverConfig;
use crate::conformance::harness::*;
use crate::driver::{Driver, Slot};
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpListener;

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
