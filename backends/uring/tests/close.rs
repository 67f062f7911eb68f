//! Closing with a receive and a send in flight, many times: exactly one `Closed`, nothing
//! after it, no descriptor or buffer leaked.
#![cfg(target_os = "linux")]

mod common;

use common::{open_fds, own, Ev};
use ringmill_core::driver::{Driver, Flow, Slot};
use ringmill_core::DriverConfig;
use ringmill_uring::UringDriver;
use socket2::SockRef;
use std::io::{IoSlice, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn poll_events(driver: &mut UringDriver, timeout: Duration) -> Vec<Ev> {
    let mut evs = Vec::new();
    driver
        .poll(Some(timeout), |c| {
            evs.push(own(c));
            Flow::Continue
        })
        .unwrap();
    evs
}

#[test]
fn close_with_recv_and_send_in_flight_1000_times() {
    let config = DriverConfig {
        buffer_size: 4096,
        buffer_count: 8,
        ring_entries: 32,
        cq_entries: 128,
        ..DriverConfig::default()
    };
    let mut driver = UringDriver::new(&config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let big = vec![0xabu8; 2 << 20];
    let before = open_fds();
    for i in 0..1000u32 {
        let mut client = TcpStream::connect(addr).unwrap();
        SockRef::from(&client)
            .set_recv_buffer_size(16 * 1024)
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        SockRef::from(&server)
            .set_send_buffer_size(16 * 1024)
            .unwrap();
        let slot = Slot(i % 3);
        driver.register(slot, server).unwrap();
        driver.recv(slot);
        // SAFETY: `big` outlives the whole test.
        unsafe { driver.send(slot, &[IoSlice::new(&big)]) };
        if i % 2 == 1 {
            client.write_all(b"ping").unwrap();
        }
        if i % 4 >= 2 {
            // Let the operations reach the kernel first; a short send makes room for a
            // second one that stays pending (the peer reads nothing).
            let mut sent = false;
            for ev in poll_events(&mut driver, Duration::ZERO) {
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
        driver.close(slot);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut closed = 0;
        while closed == 0 {
            assert!(Instant::now() < deadline, "iteration {i}: no Closed");
            for ev in poll_events(&mut driver, Duration::from_millis(50)) {
                match ev {
                    Ev::Closed(s) if s == slot => closed += 1,
                    other => panic!("iteration {i}: {other:?} after close"),
                }
            }
        }
        let after = poll_events(&mut driver, Duration::ZERO);
        assert!(after.is_empty(), "iteration {i}: {after:?} after Closed");
        drop(client);
    }
    assert_eq!(open_fds(), before, "descriptors leaked");

    // Every receive buffer came back: a fresh connection still gets all its bytes.
    let mut client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    driver.register(Slot(0), server).unwrap();
    driver.recv(Slot(0));
    let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    client.write_all(&payload).unwrap();
    drop(client);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut eof = false;
    while !eof {
        assert!(
            Instant::now() < deadline,
            "receive stalled after {} bytes: {:?}",
            got.len(),
            driver.counters()
        );
        for ev in poll_events(&mut driver, Duration::from_millis(50)) {
            match ev {
                Ev::Received(Slot(0), Ok(d)) if d.is_empty() => eof = true,
                Ev::Received(Slot(0), Ok(d)) => got.extend(d),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(got, payload);
    driver.close(Slot(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !poll_events(&mut driver, Duration::from_millis(50))
        .iter()
        .any(|e| matches!(e, Ev::Closed(Slot(0))))
    {
        assert!(Instant::now() < deadline, "no Closed");
    }
}
