//! Tests of the whole driver that need its internals (the ring's flag combinations).

use crate::driver::UringDriver;
use crate::setup::{self, human_size, TaskRun};
use ringmill_core::driver::{Completion, Driver, Flow, ListenerId, Slot};
use ringmill_core::DriverConfig;
use std::io::IoSlice;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Echoes `total` bytes over one connection through a driver built with `mode` only.
fn echo_once(mode: TaskRun, total: usize) {
    let config = DriverConfig {
        buffer_size: 4096,
        buffer_count: 4,
        ring_entries: 8,
        cq_entries: 16,
        ..DriverConfig::default()
    };
    let mut driver = UringDriver::with_modes(&config, &[mode]).expect("ring setup");
    assert!(
        driver.describe().contains(mode.label()),
        "{}",
        driver.describe()
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    driver.listen(ListenerId(0), listener).unwrap();
    let data: Vec<u8> = (0..total).map(|i| (i * 7 % 253) as u8).collect();
    let expect = data.clone();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            w.write_all(&data).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        got
    });
    let slot = Slot(5);
    let mut pending: Vec<u8> = Vec::new();
    let mut sending: Option<(Vec<u8>, usize)> = None;
    let (mut eof, mut closing, mut closed) = (false, false, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !closed {
        assert!(Instant::now() < deadline, "{mode:?}: echo stalled");
        let mut accepted = None;
        let mut sent = None;
        driver
            .poll(Some(Duration::from_millis(50)), |c| {
                match c {
                    Completion::Accepted { result, .. } => accepted = Some(result.unwrap().0),
                    Completion::Received { result, .. } => {
                        let d = result.unwrap();
                        assert!(!eof, "data after EOF");
                        if d.is_empty() {
                            eof = true;
                        }
                        pending.extend_from_slice(d);
                    }
                    Completion::Sent { result, .. } => sent = Some(result.unwrap()),
                    Completion::Closed { .. } => closed = true,
                    Completion::Connected { .. } => panic!("no connect here"),
                }
                Flow::Continue
            })
            .unwrap();
        if let Some(stream) = accepted {
            driver.register(slot, stream).unwrap();
            driver.recv(slot);
        }
        if let Some(n) = sent {
            let (buf, off) = sending.as_mut().unwrap();
            *off += n;
            if *off == buf.len() {
                sending = None;
            } else {
                // SAFETY: `buf` stays in `sending`, unchanged, until `Sent`.
                unsafe { driver.send(slot, &[IoSlice::new(&buf[*off..])]) };
            }
        }
        if sending.is_none() && !pending.is_empty() {
            let buf = std::mem::take(&mut pending);
            // SAFETY: `buf` moves into `sending` (its heap block stays put) until `Sent`.
            unsafe { driver.send(slot, &[IoSlice::new(&buf)]) };
            sending = Some((buf, 0));
        }
        if eof && sending.is_none() && pending.is_empty() && !closing {
            closing = true;
            driver.close(slot);
        }
    }
    assert_eq!(client.join().unwrap(), expect, "{mode:?}: echo differs");
}

#[test]
fn echo_with_every_flag_combination() {
    for mode in setup::ALL_TASKRUN {
        echo_once(mode, 300_000);
    }
}

#[test]
fn sizes_read_well() {
    assert_eq!(human_size(65536), "64KiB");
    assert_eq!(human_size(1 << 20), "1MiB");
    assert_eq!(human_size(1000), "1000B");
}
