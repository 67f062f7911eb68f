//! Dropping the driver with operations in flight closes everything it owns.
#![cfg(target_os = "linux")]

mod common;

use common::{open_fds, own, Ev};
use ringmill_core::driver::{Driver, Flow, ListenerId, Slot};
use ringmill_core::DriverConfig;
use ringmill_uring::UringDriver;
use socket2::SockRef;
use std::io::IoSlice;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[test]
fn drop_with_operations_in_flight_leaks_no_descriptor() {
    let big = vec![1u8; 1 << 20];
    let before = open_fds();
    let mut clients = Vec::new();
    for round in 0..20 {
        let mut driver = UringDriver::new(&DriverConfig {
            buffer_size: 4096,
            buffer_count: 8,
            ..DriverConfig::default()
        })
        .unwrap();
        let waker = driver.waker();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        driver.listen(ListenerId(0), listener).unwrap();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).unwrap());
        }
        let mut slots = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while slots < 3 {
            assert!(Instant::now() < deadline, "round {round}: accepts missing");
            let mut evs = Vec::new();
            driver
                .poll(Some(Duration::from_millis(50)), |c| {
                    evs.push(own(c));
                    Flow::Continue
                })
                .unwrap();
            for ev in evs {
                match ev {
                    Ev::Accepted(Ok((stream, _))) => {
                        SockRef::from(&stream)
                            .set_send_buffer_size(16 * 1024)
                            .unwrap();
                        driver.register(Slot(slots), stream).unwrap();
                        driver.recv(Slot(slots));
                        // SAFETY: `big` outlives the driver.
                        unsafe { driver.send(Slot(slots), &[IoSlice::new(&big)]) };
                        slots += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        if round % 2 == 0 {
            driver.close(Slot(0));
        }
        drop(driver);
        // The waker outlives the driver harmlessly.
        waker.wake().unwrap();
        drop(waker);
    }
    drop(clients);
    assert_eq!(open_fds(), before, "descriptors leaked");
}
