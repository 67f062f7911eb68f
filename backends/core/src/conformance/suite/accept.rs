//! Accepting: pause and resume, `unlisten`.

use crate::config::DriverConfig;
use crate::conformance::harness::*;
use crate::driver::{Driver, Flow, ListenerId};
use std::io::{self};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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
