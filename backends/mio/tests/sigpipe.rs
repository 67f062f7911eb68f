//! Sending to a vanished peer reports an error and never raises SIGPIPE.
//!
//! This test binary sets SIGPIPE back to its default disposition (the Rust runtime ignores
//! it), so a send that raised it would kill the process and fail the test.
#![cfg(unix)]

mod common;

use common::*;
use ringmill_core::driver::{Driver, ListenerId, Slot};
use ringmill_core::DriverConfig;
use std::io::{self, IoSlice};
use std::net::TcpStream;

fn sigpipe_disposition() -> libc::sighandler_t {
    // SAFETY: an all-zero `sigaction` is a valid out-parameter, and passing a null new
    // action only queries the current one.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(
            libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old),
            0
        );
        old.sa_sigaction
    }
}

#[test]
fn send_to_a_closed_peer_reports_an_error_without_sigpipe() {
    // SAFETY: restores the default action for SIGPIPE; no handler is installed.
    let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR);
    assert_eq!(sigpipe_disposition(), libc::SIG_DFL);

    let mut driver = driver(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let client = TcpStream::connect(addr).unwrap();
    accept_as(&mut driver, Slot(0));

    // The peer vanishes with a reset.
    socket2::SockRef::from(&client)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(client);
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    match &evs[..] {
        [Ev::Received(Slot(0), Err(err))] => {
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        }
        other => panic!("expected the reset to be received, got {other:?}"),
    }

    // Both sends fail; the second finds the connection shut (EPIPE).
    let data = vec![1u8; 64 * 1024];
    let mut errors = Vec::new();
    for _ in 0..2 {
        // SAFETY: `data` lives until the `Sent` below has been seen.
        unsafe { driver.send(Slot(0), &[IoSlice::new(&data)]) };
        let evs = poll_until(&mut driver, |evs| !evs.is_empty());
        match evs.into_iter().next() {
            Some(Ev::Sent(Slot(0), Err(err))) => errors.push(err.kind()),
            other => panic!("expected a failed Sent, got {other:?}"),
        }
    }
    assert_eq!(
        errors.last(),
        Some(&io::ErrorKind::BrokenPipe),
        "{errors:?}"
    );
    assert_eq!(sigpipe_disposition(), libc::SIG_DFL);
}
