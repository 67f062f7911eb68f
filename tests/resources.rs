//! Resource limits (contract lines 7, 8, 9): `max_connections`, running out of file
//! descriptors while accepting, and peers that vanish while the server writes to them.
//!
//! The fd-exhaustion and `SIGPIPE` tests run in a child process (this test binary run
//! again with `--exact <test>`): one lowers `RLIMIT_NOFILE`, the other restores the
//! default `SIGPIPE` disposition, and a `SIGPIPE` death must show up as the child's exit
//! status rather than kill the whole test run.

mod common;
mod common_child;

use common::*;
use common_child::{ChildTest, ParentLink};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The full name of the generated test `name::<backend>`, for re-running it in a child.
fn test_name(name: &str, backend: Backend) -> String {
    let suffix = match backend {
        Backend::Uring => "uring",
        Backend::Mio => "mio",
        Backend::Auto => unreachable!("the matrix never runs Auto"),
    };
    format!("{name}::{suffix}")
}

/// How a client connection ended up: served (its byte echoed) or turned away (closed by
/// the server without an answer).
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Served,
    Refused,
}

/// Sends one byte and waits for the echo or the close, whichever comes.
fn fate(stream: &mut TcpStream) -> Fate {
    // A write to a connection the server already closed may fail; the read tells.
    let _ = stream.write_all(b"?");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut b = [0u8; 1];
    match stream.read(&mut b) {
        Ok(1) => {
            assert_eq!(&b, b"?");
            Fate::Served
        }
        Ok(_) => Fate::Refused,
        Err(e) if is_timeout(&e) => panic!("no echo and no close within {WAIT:?}"),
        Err(_) => Fate::Refused,
    }
}

/// The current `SIGPIPE` handler, as `sigaction` reports it.
fn sigpipe_handler() -> libc::sighandler_t {
    // SAFETY: all-zero is a valid `sigaction` for the kernel to overwrite.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries the current one into `old`.
    let rc = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "sigaction: {}", std::io::Error::last_os_error());
    old.sa_sigaction
}

backend_matrix! {
    /// With `max_connections = N` and N + 100 more connects: at most N connections are
    /// ever open (by `on_connect`/`on_disconnect`), the extra ones are closed at once and
    /// each reported once with `MaxConnectionsReached(peer)`, and the server goes on:
    /// once some close, new connections are served again.
    fn max_connections_enforced_and_service_continues(backend: Backend) {
        const N: usize = 10;
        raise_nofile_limit(4096);
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let alive = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (a, p) = (Arc::clone(&alive), Arc::clone(&peak));
        let a2 = Arc::clone(&alive);
        let handler = Recording::echo(&rec)
            .on_connect(move |_, _| {
                let now = a.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                Ok(())
            })
            .on_disconnect(move |_, _| {
                // Some work in on_disconnect (not a synchronisation): the connection is
                // open until it returns, so another loop must not admit a replacement
                // meanwhile.
                let busy = Instant::now();
                while busy.elapsed() < Duration::from_millis(2) {
                    std::hint::spin_loop();
                }
                a2.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            });
        let server = start_server(&event_loop, server_config().max_connections(N).build(), handler);
        let addr = addr_of(&server);

        // N + 100 connects; each is either served (echo) or turned away (closed).
        let mut served: Vec<TcpStream> = Vec::new();
        let mut refused_peers: HashSet<SocketAddr> = HashSet::new();
        for _ in 0..N + 100 {
            let mut s = connect(addr);
            let local = s.local_addr().unwrap();
            match fate(&mut s) {
                Fate::Served => served.push(s),
                Fate::Refused => {
                    refused_peers.insert(local);
                }
            }
        }
        assert_eq!(served.len(), N, "exactly max_connections connections must be served");
        assert_eq!(refused_peers.len(), 100);
        let reported = |rec: &Record| -> usize {
            rec.errors
                .iter()
                .filter(|e| e.kind == "MaxConnectionsReached")
                .count()
        };
        rec.wait(WAIT, "100 MaxConnectionsReached reports", |r| reported(r) >= 100);
        rec.with(|r| {
            for e in r.errors.iter().filter(|e| e.kind == "MaxConnectionsReached") {
                assert!(e.conn.is_none(), "MaxConnectionsReached is a server-level error");
            }
            // Each refused peer is named once, and only refused peers are named.
            let named: Vec<&String> = r
                .errors
                .iter()
                .filter(|e| e.kind == "MaxConnectionsReached")
                .map(|e| &e.message)
                .collect();
            assert_eq!(named.len(), 100, "one report per refused connection");
            for peer in &refused_peers {
                assert!(
                    named.iter().any(|m| m.ends_with(&peer.to_string())),
                    "refused peer {peer} not reported: {named:?}"
                );
            }
        });
        assert_eq!(rec.connects(), N, "refused connections get no on_connect");
        assert_eq!(server.connection_count(), N);

        // Churn: close a served connection, connect until a new one is served, many times.
        // The server must keep serving, and never have more than N open.
        let mut refused_during_churn = 0;
        for round in 0..60 {
            let old = served.remove(round % served.len());
            if round % 2 == 0 {
                drop(old);
            } else {
                reset_close(old);
            }
            let deadline = Instant::now() + WAIT;
            loop {
                assert!(Instant::now() < deadline, "no connection served again after a close");
                let mut s = connect(addr);
                match fate(&mut s) {
                    Fate::Served => {
                        served.push(s);
                        break;
                    }
                    Fate::Refused => refused_during_churn += 1,
                }
            }
        }
        rec.wait(WAIT, "every refusal reported", |r| {
            reported(r) == 100 + refused_during_churn
        });
        assert_eq!(served.len(), N);
        assert_eq!(rec.connects(), N + 60);
        rec.wait_disconnects(60, WAIT);

        // Full again: one more is refused.
        let mut extra = connect(addr);
        assert_eq!(fate(&mut extra), Fate::Refused, "the server is full again");

        drop(served);
        rec.wait_disconnects(N + 60, WAIT);
        rec.assert_all_closed_once();
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= N, "{peak} connections were open at once, max_connections is {N}");
        assert_eq!(peak, N);
        server.stop().unwrap();
    }

    /// The server runs out of descriptors (low `RLIMIT_NOFILE`, in a child) while
    /// clients keep connecting: `on_error(None, Accept(EMFILE))` is reported once, the
    /// process does not spin while the backlog is full (CPU stays low over a saturated
    /// window), and once descriptors are free again new connections are accepted and
    /// served.
    fn emfile_backs_off_and_recovers(backend: Backend) {
        const CLIENTS: usize = 64;
        const ROOM: u64 = 16;
        if common_child::role().as_deref() == Some("emfile-server") {
            let parent = ParentLink::new();
            let event_loop = event_loop_with(backend, |b| b.threads(1).buffer_count(16));
            let rec = Recorder::shared();
            let accept_errors: Arc<Shared<Vec<Option<i32>>>> = Arc::default();
            let errs = Arc::clone(&accept_errors);
            let handler = Recording::echo(&rec).on_error(move |_, conn, e| {
                if let NetworkError::Accept(_) = e {
                    assert!(conn.is_none(), "Accept errors are server-level");
                    errs.update(|v| v.push(e.io_error().and_then(std::io::Error::raw_os_error)));
                }
            });
            let server = TcpServer::new(server_config().build(), handler).unwrap();
            let addr = addr_of(&server);

            // Room for ROOM more descriptors only, set before the server starts accepting.
            leave_room_for_descriptors(ROOM as usize);
            server.start(&event_loop).unwrap();
            common_child::report("port", addr.port());

            // The parent connects more clients than there are descriptors left.
            if accept_errors.try_wait_map(WAIT, |v| (!v.is_empty()).then_some(())).is_none() {
                // (No fd_list() here: listing descriptors needs one.)
                panic!(
                    "no Accept error while out of descriptors (room for {ROOM}); {:?}",
                    rec
                );
            }

            // Saturated: the backlog holds connections the server cannot take. Measure
            // how busy the process is meanwhile (a busy loop would use a whole core).
            let (cpu0, wall0) = (cpu_time(), Instant::now());
            // The measurement window: a second report while saturated would end it early
            // (and fails the check below).
            let _ = accept_errors.try_wait_map(Duration::from_millis(1500), |v| {
                (v.len() > 1).then_some(())
            });
            let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
            let share = cpu.as_secs_f64() / wall.as_secs_f64();
            let reports = accept_errors.with(|v| v.clone());
            assert_eq!(
                reports,
                vec![Some(libc::EMFILE)],
                "one Accept(EMFILE) report per episode"
            );
            let accepted = rec.connects();
            assert!(
                accepted as u64 <= ROOM,
                "{accepted} accepted with room for {ROOM} descriptors"
            );
            common_child::report("saturated", format!("{share:.3} {accepted}"));
            assert!(
                share < 0.3,
                "the process used {:.0}% of a core while out of descriptors (busy loop?)",
                share * 100.0
            );

            // The parent closes every client, then connects a fresh one and expects it
            // served; then it tells us it is done.
            parent.expect("done", Duration::from_secs(30));
            rec.wait(WAIT, "every connection closed", |r| {
                r.connects > accepted && r.disconnects == r.connects
            });
            rec.assert_all_closed_once();
            common_child::report("finished", rec.connects());
            server.stop().unwrap();
            return;
        }

        raise_nofile_limit(4096);
        let mut child = ChildTest::spawn(
            &test_name("emfile_backs_off_and_recovers", backend),
            "emfile-server",
            &[],
        );
        let port: u16 = child.expect("port", WAIT).parse().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
        let saturated = child.expect("saturated", Duration::from_secs(30));
        let share: f64 = saturated.split(' ').next().unwrap().parse().unwrap();
        println!("{backend}: CPU share while out of descriptors: {share}");
        assert!(share < 0.3, "CPU share while saturated: {share}");

        // Free the descriptors: the server sees every client close.
        clients.clear();
        // A fresh connection is accepted and served.
        let mut fresh = connect(addr);
        fresh.write_all(b"after EMFILE").unwrap();
        assert_eq!(read_exact_within(&mut fresh, 12, Duration::from_secs(20)), b"after EMFILE");
        drop(fresh);
        child.send("done");
        child.expect("finished", Duration::from_secs(30));
        child.wait_success(Duration::from_secs(30));
    }

    /// With `SIGPIPE` at its default disposition (which kills the process), many peers
    /// vanish (RST or close with unread data) while the server is writing large amounts
    /// to them. The process survives (it runs as a child: a `SIGPIPE` death is its exit
    /// status), every `on_connect` gets its `on_disconnect`, and the library did not
    /// change the disposition to get there.
    fn vanishing_peers_raise_no_sigpipe(backend: Backend) {
        const PEERS: usize = 64;
        if common_child::role().as_deref() == Some("sigpipe") {
            // The Rust runtime ignores SIGPIPE; put the default (terminate) back.
            // SAFETY: setting a signal disposition to SIG_DFL is always sound.
            let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            assert_ne!(previous, libc::SIG_ERR);
            assert_eq!(sigpipe_handler(), libc::SIG_DFL, "SIGPIPE must be at SIG_DFL");

            let event_loop = event_loop(backend);
            let rec = Recorder::counting();
            let rec = Arc::new(rec);
            let chunk: Arc<Vec<u8>> = Arc::new(pattern(3, 256 * 1024));
            let (c1, c2) = (Arc::clone(&chunk), Arc::clone(&chunk));
            // Keep every connection's queue fed: 1 MiB at connect, more whenever it
            // empties. Refusals (the peer is gone) are expected and ignored.
            let handler = Recording::new(&rec)
                .on_connect(move |ctx, id| {
                    for _ in 0..4 {
                        let _ = ctx.send_to(id, &c1);
                    }
                    Ok(())
                })
                .on_writable(move |ctx, id| {
                    for _ in 0..4 {
                        let _ = ctx.send_to(id, &c2);
                    }
                    Ok(())
                });
            let config = server_config().high_watermark(2 << 20).low_watermark(1 << 20).build();
            let server = start_server(&event_loop, config, handler);
            let addr = addr_of(&server);

            let peers: Vec<_> = (0..4)
                .map(|t| {
                    std::thread::spawn(move || {
                        let mut rng = Rng::new(t);
                        for i in 0..PEERS / 4 {
                            let mut s = connect(addr);
                            // Take some of the stream, then vanish.
                            let want = rng.range(1, 512 * 1024);
                            let mut buf = vec![0u8; 64 * 1024];
                            let mut got = 0;
                            while got < want {
                                match s.read(&mut buf) {
                                    Ok(0) => panic!("server closed first"),
                                    Ok(n) => got += n,
                                    Err(e) => panic!("peer read: {e}"),
                                }
                            }
                            match i % 3 {
                                0 => reset_close(s),
                                1 => drop(s), // unread data: the kernel sends an RST
                                _ => {
                                    let _ = s.shutdown(std::net::Shutdown::Both);
                                    drop(s);
                                }
                            }
                        }
                    })
                })
                .collect();
            for p in peers {
                p.join().expect("peer thread");
            }
            rec.wait(WAIT, "every peer connected and disconnected", |r| {
                r.connects == PEERS && r.disconnects == PEERS
            });
            rec.assert_all_closed_once();
            assert_eq!(
                sigpipe_handler(),
                libc::SIG_DFL,
                "the library must not change the SIGPIPE disposition"
            );
            server.stop().unwrap();
            common_child::report("survived", rec.connects());
            return;
        }

        let mut child = ChildTest::spawn(
            &test_name("vanishing_peers_raise_no_sigpipe", backend),
            "sigpipe",
            &[],
        );
        child.expect("survived", Duration::from_secs(60));
        let status = child.wait(Duration::from_secs(30));
        assert!(
            status.success(),
            "the server process did not survive vanishing peers: {}",
            common_child::describe(status)
        );
    }
}
