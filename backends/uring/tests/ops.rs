//! Single operations: waking, connecting, accept pause/resume, unlisten, setup description.
#![cfg(target_os = "linux")]

mod common;

use common::{own, Ev};
use ringmill_core::driver::{Completion, Driver, Flow, ListenerId, Slot};
use ringmill_core::DriverConfig;
use ringmill_uring::UringDriver;
use socket2::{Domain, Socket, Type};
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

fn small_config() -> DriverConfig {
    DriverConfig {
        buffer_size: 4096,
        buffer_count: 16,
        ring_entries: 64,
        cq_entries: 256,
        ..DriverConfig::default()
    }
}

/// Polls until `pred` accepts an event (returned) or the deadline passes (panic).
fn poll_for(driver: &mut UringDriver, what: &str, mut pred: impl FnMut(&Ev) -> bool) -> Ev {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = None;
    let mut seen = Vec::new();
    while found.is_none() {
        assert!(
            Instant::now() < deadline,
            "deadline passed waiting for {what}; saw {seen:?}"
        );
        let mut evs = Vec::new();
        driver
            .poll(Some(Duration::from_millis(50)), |c| {
                evs.push(own(c));
                Flow::Continue
            })
            .unwrap();
        for ev in evs {
            if found.is_none() && pred(&ev) {
                found = Some(ev);
            } else {
                seen.push(format!("{ev:?}"));
            }
        }
    }
    found.unwrap()
}

#[test]
fn name_and_description() {
    let driver = UringDriver::new(&small_config()).unwrap();
    assert_eq!(driver.name(), "io_uring");
    let d = driver.describe();
    assert!(d.starts_with("io_uring ("), "{d}");
    assert!(d.contains("multishot accept+recv"), "{d}");
    assert!(d.contains("provided buffer ring 16x4KiB"), "{d}");
    assert!(d.contains("registered buffers: "), "{d}");
    eprintln!("{d}");
}

#[test]
fn invalid_config_is_a_setup_error() {
    let config = DriverConfig {
        buffer_count: 3,
        ..DriverConfig::default()
    };
    let err = UringDriver::new(&config)
        .err()
        .expect("3 buffers is not a power of two");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.reason().contains("buffer_count"), "{}", err.reason());
}

#[test]
fn waker_wakes_a_blocking_poll_from_another_thread() {
    let (waker_tx, waker_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    // The driver lives on its own loop thread, blocked in poll(None).
    thread::spawn(move || {
        let mut driver = UringDriver::new(&small_config()).unwrap();
        waker_tx.send(driver.waker()).unwrap();
        let mut events = 0;
        driver
            .poll(None, |_| {
                events += 1;
                Flow::Continue
            })
            .unwrap();
        done_tx.send((events, driver.counters().wakeups)).unwrap();
    });
    let waker = waker_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("driver setup");
    waker.wake().unwrap();
    let (events, wakeups) = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("poll(None) was not woken by the waker");
    assert_eq!(events, 0);
    assert_eq!(wakeups, 1);
}

#[test]
fn every_wake_ends_one_timed_poll() {
    let mut driver = UringDriver::new(&small_config()).unwrap();
    let waker = driver.waker();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let t = thread::spawn(move || {
        while go_rx.recv().is_ok() {
            waker.wake().unwrap();
        }
    });
    for i in 1..=20 {
        go_tx.send(()).unwrap();
        driver
            .poll(Some(Duration::from_secs(30)), |_| Flow::Continue)
            .unwrap();
        assert_eq!(
            driver.counters().wakeups,
            i,
            "poll returned without the wake-up (it timed out)"
        );
    }
    drop(go_tx);
    t.join().unwrap();
}

#[test]
fn connect_to_a_closed_port_is_refused() {
    let mut driver = UringDriver::new(&small_config()).unwrap();
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    driver.connect(Slot(3), socket, addr).unwrap();
    let ev = poll_for(&mut driver, "Connected", |e| matches!(e, Ev::Connected(..)));
    match ev {
        Ev::Connected(Slot(3), Err(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
            assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
        }
        other => panic!("expected a refused connect, got {other:?}"),
    }
    driver.close(Slot(3));
    poll_for(&mut driver, "Closed", |e| matches!(e, Ev::Closed(Slot(3))));
}

#[test]
fn connect_then_exchange_bytes() {
    let mut driver = UringDriver::new(&small_config()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    driver.connect(Slot(0), socket, addr).unwrap();
    // The connect is submitted by the next poll; the kernel completes the handshake
    // from the listen backlog before anyone accepts.
    let ev = poll_for(&mut driver, "Connected", |e| matches!(e, Ev::Connected(..)));
    assert!(matches!(ev, Ev::Connected(Slot(0), Ok(()))), "{ev:?}");
    let (mut peer, _) = listener.accept().unwrap();
    driver.recv(Slot(0));
    peer.write_all(b"hello").unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        match poll_for(&mut driver, "Received", |e| matches!(e, Ev::Received(..))) {
            Ev::Received(Slot(0), Ok(d)) => got.extend(d),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, b"hello");
    let msg = b"world".to_vec();
    // SAFETY: `msg` outlives the `Sent` awaited below.
    unsafe { driver.send(Slot(0), &[IoSlice::new(&msg[..2]), IoSlice::new(&msg[2..])]) };
    let ev = poll_for(&mut driver, "Sent", |e| matches!(e, Ev::Sent(..)));
    assert!(matches!(ev, Ev::Sent(Slot(0), Ok(5))), "{ev:?}");
    let mut buf = [0u8; 5];
    peer.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"world");
    drop(peer);
    let ev = poll_for(&mut driver, "EOF", |e| matches!(e, Ev::Received(..)));
    assert!(
        matches!(&ev, Ev::Received(Slot(0), Ok(d)) if d.is_empty()),
        "{ev:?}"
    );
    driver.close(Slot(0));
    poll_for(&mut driver, "Closed", |e| matches!(e, Ev::Closed(Slot(0))));
}

fn connect_n(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
}

#[test]
fn accept_pause_keeps_connections_until_resume() {
    let mut driver = UringDriver::new(&small_config()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    driver.listen(ListenerId(7), listener).unwrap();
    let _first = connect_n(addr, 1);
    // Pause on the first accept.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut accepted = Vec::new();
    while accepted.is_empty() {
        assert!(Instant::now() < deadline, "first accept never came");
        driver
            .poll(Some(Duration::from_millis(50)), |c| match c {
                Completion::Accepted { listener, result } => {
                    assert_eq!(listener, ListenerId(7));
                    accepted.push(result.unwrap());
                    Flow::Pause
                }
                other => panic!("{other:?}"),
            })
            .unwrap();
    }
    let peers = connect_n(addr, 3);
    for _ in 0..5 {
        driver
            .poll(Some(Duration::from_millis(20)), |c| {
                panic!("delivered while accepting is paused: {c:?}")
            })
            .unwrap();
    }
    driver.resume_accept(ListenerId(7));
    let mut peers_seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while peers_seen.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "accepts after resume: {peers_seen:?}"
        );
        driver
            .poll(Some(Duration::from_millis(50)), |c| match c {
                Completion::Accepted { result, .. } => {
                    let (stream, peer) = result.unwrap();
                    assert_eq!(stream.peer_addr().unwrap(), peer);
                    // SAFETY: F_GETFL on a descriptor `stream` owns.
                    let fl = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_GETFL) };
                    assert!(fl & libc::O_NONBLOCK != 0, "accepted socket is blocking");
                    peers_seen.push(peer);
                    Flow::Continue
                }
                other => panic!("{other:?}"),
            })
            .unwrap();
    }
    let mut want: Vec<SocketAddr> = peers.iter().map(|p| p.local_addr().unwrap()).collect();
    want.sort();
    peers_seen.sort();
    assert_eq!(peers_seen, want);
}

#[test]
fn unlisten_closes_the_listener() {
    let mut driver = UringDriver::new(&small_config()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    driver.listen(ListenerId(1), listener).unwrap();
    let _c = connect_n(addr, 1);
    poll_for(&mut driver, "Accepted", |e| {
        matches!(e, Ev::Accepted(Ok(_)))
    });
    driver.unlisten(ListenerId(1));
    // Once the kernel let go of the socket, connecting is refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        driver
            .poll(Some(Duration::from_millis(20)), |c| {
                panic!("delivered after unlisten: {c:?}")
            })
            .unwrap();
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
            Err(e) => panic!("{e}"),
            Ok(_) => assert!(Instant::now() < deadline, "listener still open"),
        }
    }
    // Unknown ids are ignored.
    driver.unlisten(ListenerId(1));
    driver.resume_accept(ListenerId(99));
}

extern "C" fn ignore_signal(_: libc::c_int) {}

#[test]
fn signals_during_a_blocking_poll_are_retried() {
    use std::os::unix::thread::JoinHandleExt;
    // A handler without SA_RESTART, so a blocked io_uring_enter returns EINTR.
    // SAFETY: installs a handler that does nothing; the sigaction struct is fully
    // initialised.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let (waker_tx, waker_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let mut driver = UringDriver::new(&small_config()).unwrap();
        waker_tx.send(driver.waker()).unwrap();
        let mut polls = 0;
        while driver.counters().wakeups == 0 {
            // An EINTR would surface here as an error.
            driver
                .poll(None, |c| panic!("unexpected completion {c:?}"))
                .expect("poll must retry interrupted waits");
            polls += 1;
        }
        eprintln!(
            "enters during the signal storm: {}",
            driver.counters().enters
        );
        done_tx.send(polls).unwrap();
    });
    let waker = waker_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    for _ in 0..200 {
        // SAFETY: the thread is alive (it ends only after the wake-up below).
        let rc = unsafe { libc::pthread_kill(handle.as_pthread_t(), libc::SIGUSR1) };
        assert_eq!(rc, 0);
        thread::yield_now();
    }
    waker.wake().unwrap();
    let polls = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("loop thread did not finish after the wake-up");
    assert_eq!(
        polls, 1,
        "a signal ended poll(None) without a completion or wake-up"
    );
    handle.join().unwrap();
}
