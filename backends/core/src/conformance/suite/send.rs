//! Sending: waiting for room, `shutdown_write`, and the two broken calls.

use crate::config::DriverConfig;
use crate::conformance::harness::*;
use crate::driver::{Driver, ListenerId, Slot};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;

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

/// A broken call: `send` on a slot the driver does not own (never registered, or already
/// `Closed`). The contract gives it no outcome; the suite asks for the one both drivers
/// can keep: a debug-build precondition panic at the call, or no completion at all for
/// that slot, and in both cases the driver goes on serving its other connections.
pub fn send_on_an_unknown_slot<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    accept_as(&mut driver, Slot(0));
    let bytes = b"stray".to_vec();
    for stray in [Slot(9), Slot(1000)] {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `bytes` lives to the end of the test.
            unsafe { driver.send(stray, &[IoSlice::new(&bytes)]) }
        }));
        if outcome.is_ok() {
            assert_quiet(&mut driver, "after a send on an unknown slot");
        }
    }
    // The driver still serves slot 0.
    client.write_all(b"x").unwrap();
    let evs = poll_until(&mut driver, |evs| !received_bytes(evs, Slot(0)).is_empty());
    assert!(evs.iter().all(|ev| ev.slot() == Some(Slot(0))), "{evs:?}");
    close_and_wait(&mut driver, Slot(0));
    // A slot after its `Closed` is unknown too.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as above.
        unsafe { driver.send(Slot(0), &[IoSlice::new(&bytes)]) }
    }));
    if outcome.is_ok() {
        assert_quiet(&mut driver, "after a send on a closed slot");
    }
}

/// A broken call: a second `send` while one is in flight (waiting for room on a full
/// socket). The contract forbids it (a precondition of `send`) and gives it no outcome;
/// the suite asks that it be detected and change nothing: a debug-build panic at the call,
/// or a failed `Sent` for it. Either way the send in flight completes with exactly one
/// `Sent`, the peer reads exactly the bytes of the accepted sends, in order, and the slot
/// still closes with one `Closed`.
pub fn second_send_in_flight<D: Driver>(make: impl Fn(&DriverConfig) -> D) {
    let _serial = shared();
    let mut driver = make(&DriverConfig::default());
    let addr = listen(&mut driver, ListenerId(0));
    let client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    accept_as(&mut driver, Slot(0));
    let big = Rng::new(23).bytes(32 << 20);
    let second = b"second".to_vec();
    // The first send fills the socket and is short; the next one waits for room.
    // SAFETY: `big` and `second` live to the end of the test and are not changed.
    unsafe { driver.send(Slot(0), &[IoSlice::new(&big)]) };
    let evs = poll_until(&mut driver, |evs| !evs.is_empty());
    let first = match &evs[..] {
        [Ev::Sent(Slot(0), Ok(n))] if *n > 0 && *n < big.len() => *n,
        other => panic!("expected one short Sent, got {other:?}"),
    };
    // SAFETY: as above.
    unsafe { driver.send(Slot(0), &[IoSlice::new(&big[first..])]) };
    assert_quiet(&mut driver, "a send on a full socket");

    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as above (the call itself is the broken part under test).
        unsafe { driver.send(Slot(0), &[IoSlice::new(&second)]) }
    }));
    let reader = {
        let mut client = client.try_clone().unwrap();
        thread::spawn(move || {
            let mut got = Vec::new();
            client.read_to_end(&mut got).map(|_| got)
        })
    };
    let want = if outcome.is_ok() { 2 } else { 1 };
    let evs = poll_until(&mut driver, |evs| {
        evs.iter().filter(|ev| matches!(ev, Ev::Sent(..))).count() >= want
    });
    let sents: Vec<&io::Result<usize>> = evs
        .iter()
        .filter_map(|ev| match ev {
            Ev::Sent(Slot(0), result) => Some(result),
            _ => None,
        })
        .collect();
    let ok: Vec<usize> = sents
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(
        (sents.len(), ok.len()),
        (want, 1),
        "one Sent for the send in flight, and a failed one for the refused send \
         unless the call panicked: {sents:?}"
    );
    let accepted = first + ok[0];
    assert_quiet(&mut driver, "after the sends' outcomes");
    close_and_wait(&mut driver, Slot(0));
    let got = reader.join().unwrap().expect("peer read to end of stream");
    assert_eq!(
        got.len(),
        accepted,
        "the peer read other bytes than the accepted sends"
    );
    assert!(
        got == big[..accepted],
        "the peer read other bytes than the accepted sends"
    );
}
