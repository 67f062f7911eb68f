//! Issue 5, item 2: slowloris. 1,000 connections trickle a byte (half of them a second
//! byte a second later, which must push their deadline back) and then send nothing more,
//! while 50 normal clients keep echoing. With `idle_timeout` 2 s:
//!
//! - every slow connection is closed by the idle timeout (`on_error(IdleTimeout)` then
//!   `on_disconnect`), within timeout + 1 s of its last byte, and never before the
//!   timeout (seen by the server, and by the client as EOF);
//! - a byte after a quiet spell pushes the deadline back from when it arrived.
//!
//! The two backends' slowloris tests run one after the other (see `exclusive`).
//! - the 50 normal clients are never interrupted: every echo intact, no error, no close.

mod common;
mod rel_support;

use common::*;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use rel_support::*;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SLOW: usize = 1000;
const NORMAL: usize = 50;
const IDLE: Duration = Duration::from_secs(2);
/// What the issue allows past the timeout.
const SLACK: Duration = Duration::from_secs(1);
/// Timer granularity below the timeout (the server stamps activity when a poll returns,
/// a moment before `on_data` runs).
const EARLY: Duration = Duration::from_millis(50);

#[derive(Debug, Default, Clone, Copy)]
struct Times {
    connected: Option<Instant>,
    last_data: Option<Instant>,
    timed_out: Option<Instant>,
}

/// One slow client: its socket and when it wrote its last byte.
struct Slow {
    stream: MioStream,
    local: SocketAddr,
    bytes: usize,
    last_write: Instant,
    eof: Option<Instant>,
}

/// Drives the slow clients from one thread; returns, per client, its last write and the
/// EOF it saw.
fn slowloris(addr: SocketAddr) -> Vec<(SocketAddr, Instant, Instant)> {
    let mut poll = Poll::new().unwrap();
    let mut slow: Vec<Slow> = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let std = connect_from([127, 0, 0, 1], addr);
        let local = std.local_addr().unwrap();
        (&std).write_all(b"s").unwrap();
        let last_write = Instant::now();
        std.set_nonblocking(true).unwrap();
        let mut stream = MioStream::from_std(std);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)
            .unwrap();
        slow.push(Slow {
            stream,
            local,
            bytes: 1,
            last_write,
            eof: None,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 64];
    let mut closed = 0;
    let mut next_second = 0; // the next even client due for its second byte
    let deadline = Instant::now() + Duration::from_secs(60);
    while closed < SLOW {
        assert!(
            Instant::now() < deadline,
            "slow clients not all closed: {closed} of {SLOW}"
        );
        // Even clients send a second byte one second after their first (pacing).
        let mut timeout = Duration::from_millis(100);
        while next_second < SLOW {
            let c = &mut slow[next_second];
            let due = c.last_write + Duration::from_secs(1);
            let now = Instant::now();
            if due > now {
                timeout = timeout.min(due - now);
                break;
            }
            if c.eof.is_none() {
                match c.stream.write(b"s") {
                    Ok(1) => {
                        c.bytes = 2;
                        c.last_write = Instant::now();
                    }
                    other => panic!("slow client {next_second}: second byte: {other:?}"),
                }
            }
            next_second += 2;
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut slow[i];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        if c.eof.is_none() {
                            c.eof = Some(Instant::now());
                            closed += 1;
                        }
                        break;
                    }
                    Ok(n) => assert!(
                        buf[..n].iter().all(|b| *b == b's'),
                        "slow client {i}: wrong echo"
                    ),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("slow client {i}: {e} instead of EOF"),
                }
            }
        }
    }
    slow.iter()
        .map(|c| (c.local, c.last_write, c.eof.unwrap()))
        .collect()
}

backend_matrix! {
    fn slowloris_closed_by_idle_timeout_while_others_echo(backend: Backend) {
        // One backend at a time: the bound is the library's, not that of a doubly
        // overloaded machine.
        let _alone = exclusive();
        ensure_nofile(8192, 4096);
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let times: Arc<Shared<HashMap<ConnectionId, Times>>> = Arc::default();
        let (t0, t1, t2) = (Arc::clone(&times), Arc::clone(&times), Arc::clone(&times));
        let handler = Recording::echo(&rec)
            .on_connect(move |_, id| {
                let now = Instant::now();
                t0.update(|m| m.entry(id).or_default().connected = Some(now));
                Ok(())
            })
            .on_data(move |_, id, _| {
                let now = Instant::now();
                t1.update(|m| m.entry(id).or_default().last_data = Some(now));
                Ok(())
            })
            .on_error(move |_, id, e| {
                if let (Some(id), NetworkError::IdleTimeout(_)) = (id, e) {
                    let now = Instant::now();
                    t2.update(|m| m.entry(id).or_default().timed_out = Some(now));
                }
            });
        let server = start_server(&event_loop, server_config().idle_timeout(IDLE).build(), handler);
        let addr = addr_of(&server);

        // The normal clients (from 127.0.0.2) echo until the slow ones are all gone.
        let done = Arc::new(AtomicBool::new(false));
        let normal: Vec<_> = (0..NORMAL)
            .map(|i| {
                let done = Arc::clone(&done);
                std::thread::spawn(move || {
                    let mut s = connect_from([127, 0, 0, 2], addr);
                    let mut rng = Rng::new(i as u64);
                    let mut rounds = 0usize;
                    while rounds == 0 || !done.load(Ordering::SeqCst) {
                        let len = rng.range(1, 4096);
                        let msg = rng.bytes(len);
                        s.write_all(&msg).unwrap_or_else(|e| panic!("normal client {i}: {e}"));
                        let got = read_exact_within(&mut s, msg.len(), WAIT);
                        assert_bytes_eq(&got, &msg, &format!("normal client {i}, round {rounds}"));
                        rounds += 1;
                    }
                    (s, rounds)
                })
            })
            .collect();

        let slow = slowloris(addr);
        done.store(true, Ordering::SeqCst);
        let normal: Vec<_> = normal.into_iter().map(|h| h.join().expect("normal client")).collect();
        let rounds: usize = normal.iter().map(|(_, r)| r).sum();

        // The server's view.
        rec.wait(WAIT, "every slow connection closed", |r| r.disconnects >= SLOW);
        let normal_ip: IpAddr = [127, 0, 0, 2].into();
        let times = times.with(|m| m.clone());
        let mut slow_seen = 0;
        let mut worst = Duration::ZERO;
        rec.with(|r| {
            assert!(r.violations.is_empty(), "{:?}", r.violations);
            for (id, t) in &r.conns {
                let peer = t.peer.expect("peer recorded");
                if peer.ip() == normal_ip {
                    assert!(!t.closed(), "normal client {peer} was disconnected: {:?}", t.events);
                    assert!(t.errors().is_empty(), "normal client {peer}: {:?}", t.errors());
                    continue;
                }
                slow_seen += 1;
                assert_eq!(t.errors(), vec!["IdleTimeout".to_string()], "{id}: {:?}", t.events);
                assert!(t.closed(), "{id} not closed");
                assert!(t.bytes == 1 || t.bytes == 2, "{id}: {} bytes", t.bytes);
                let tm = times[id];
                let idle = tm.timed_out.unwrap() - tm.last_data.unwrap();
                worst = worst.max(idle);
                assert!(idle + EARLY >= IDLE, "{id}: closed {idle:?} after its last byte, before the timeout");
                assert!(idle <= IDLE + SLACK, "{id}: closed {idle:?} after its last byte");
            }
        });
        assert_eq!(slow_seen, SLOW);
        assert_eq!(rec.connects(), SLOW + NORMAL);
        // The clients' view: EOF within timeout + 1 s of the last byte.
        let by_peer: HashMap<SocketAddr, ConnectionId> = rec.with(|r| {
            r.conns.iter().map(|(id, t)| (t.peer.unwrap(), *id)).collect()
        });
        for (i, (local, last_write, eof)) in slow.iter().enumerate() {
            let idle = *eof - *last_write;
            let server = by_peer.get(local).map(|id| times[id]);
            let at = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(*last_write));
            assert!(
                idle <= IDLE + SLACK,
                "slow client {i} ({local}): EOF {idle:?} after its last byte (timeout {IDLE:?} \
                 + {SLACK:?}); server side, after that byte: on_connect {:?}, last on_data \
                 {:?}, IdleTimeout {:?}",
                server.and_then(|t| at(t.connected)),
                server.and_then(|t| at(t.last_data)),
                server.and_then(|t| at(t.timed_out)),
            );
        }
        println!("{backend}: {SLOW} slow connections closed, at most {worst:?} after their last byte; {rounds} echoes meanwhile");

        // The normal clients still work, and close cleanly.
        for (i, (mut s, _)) in normal.into_iter().enumerate() {
            s.write_all(b"still here").unwrap();
            assert_eq!(read_exact_within(&mut s, 10, WAIT), b"still here", "normal client {i}");
        }
        rec.wait_disconnects(SLOW + NORMAL, WAIT);
        rec.assert_all_closed_once();
        server.stop().unwrap();
    }
}

backend_matrix! {
    /// A byte that arrives after a quiet spell (the loop was asleep in its poll the whole
    /// time) pushes the idle deadline back from the moment it arrived: one connection,
    /// `idle_timeout` 1 s, a byte at once and another 0.8 s later; the close must not come
    /// before 1 s after the second byte.
    fn activity_after_a_quiet_spell_pushes_the_idle_deadline_back(backend: Backend) {
        const IDLE: Duration = Duration::from_secs(1);
        let event_loop = event_loop_with(backend, |b| b.threads(1));
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().idle_timeout(IDLE).build(), Recording::echo(&rec));
        let mut s = connect(addr_of(&server));
        s.write_all(b"a").unwrap();
        assert_eq!(read_exact_within(&mut s, 1, WAIT), b"a");
        // The quiet spell: 0.8 s in which the loop has nothing to do, and in which the
        // connection must stay open (a read that ends before the deadline is a failure).
        s.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
        match s.read(&mut [0u8; 1]) {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            other => panic!("{backend}: the connection ended during the quiet spell: {other:?}"),
        }
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"b").unwrap();
        let second = Instant::now();
        assert_eq!(read_exact_within(&mut s, 1, WAIT), b"b");
        read_to_eof(&mut s, WAIT);
        let idle = second.elapsed();
        assert!(
            idle + EARLY >= IDLE,
            "closed {idle:?} after the last byte, with an idle timeout of {IDLE:?}"
        );
        assert!(idle <= IDLE + SLACK, "closed {idle:?} after the last byte");
        let id = rec.wait_conn(0, WAIT);
        rec.wait_closed(id, WAIT);
        assert_eq!(rec.trace(id).errors(), vec!["IdleTimeout".to_string()]);
    }
}
