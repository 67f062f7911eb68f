//! Sending: waiting for room, `shutdown_write`, and the two broken calls.

use crate::config::DriverConfig;
use crate::conformance::harness::*;
use crate::driver::{Driver, ListenerId, Slot};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

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
