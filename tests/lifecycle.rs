//! Lifecycle conformance (contract lines 1, 11 and the map's id rule): stale ids never
//! reach newer connections, start/stop cycles leak nothing, `TcpServer::stop` and
//! `EventLoop::stop` close everything (flushing what is queued) and `stop` is idempotent,
//! callable before `run` and from a handler.

mod common;
mod common_child;

use common::*;
use common_child::ChildTest;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, OnceLock, Weak};

/// A `ConnectionNotFound(id)` from `send_to`, or a panic naming what came instead.
#[track_caller]
fn assert_not_found(result: Result<()>, id: ConnectionId) {
    let err = result.expect_err("send_to on a closed connection's id must fail");
    match network_error(err.as_ref()) {
        NetworkError::ConnectionNotFound(got) => assert_eq!(*got, id),
        other => panic!("expected ConnectionNotFound({id}), got {other:?}"),
    }
}

/// Asserts that connecting to `addr` is refused (nothing listens any more), several
/// times in a row: a listener that lingers for a moment after `stop` returned would let
/// handshakes complete into a queue nobody accepts from.
#[track_caller]
fn assert_refused(addr: std::net::SocketAddr) {
    for attempt in 0..20 {
        match TcpStream::connect_timeout(&addr, WAIT) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => panic!(
                "connect #{attempt} to a stopped server: expected ConnectionRefused, got {e}"
            ),
            Ok(s) => panic!(
                "connect #{attempt} to a stopped server succeeded ({:?} -> {addr}): it still \
                 listens",
                s.local_addr()
            ),
        }
    }
}

backend_matrix! {
    /// Ids of closed connections are refused with `ConnectionNotFound` (and their
    /// senders with `Closed`), across many reconnects, and nothing sent to them reaches
    /// any newer connection: each live connection receives exactly its own marker.
    fn stale_id_never_reaches_newer_connection(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let ctx = server.context();
        let addr = addr_of(&server);

        let mut live: Vec<(ConnectionId, TcpStream)> = Vec::new();
        let mut stale: Vec<ConnectionId> = Vec::new();
        let mut stale_senders: Vec<ConnSender> = Vec::new();
        let mut opened = 0;
        for round in 0..16 {
            // Two new connections, then the oldest live one goes away: ids keep moving on
            // while both old and new slots get reused.
            for _ in 0..2 {
                let stream = connect(addr);
                let id = rec.wait_conn(opened, WAIT);
                opened += 1;
                live.push((id, stream));
            }
            let (old, stream) = live.remove(0);
            let sender = ctx.sender(old).expect("a live connection has a sender");
            if round % 2 == 0 {
                drop(stream);
            } else {
                reset_close(stream);
            }
            rec.wait_closed(old, WAIT);
            stale.push(old);
            stale_senders.push(sender);

            for &id in &stale {
                assert_not_found(ctx.send_to(id, b"STALE-BYTES"), id);
                assert!(ctx.sender(id).is_none(), "no sender for the closed {id}");
                // Closing a stale id does nothing (in particular, closes no newer one).
                ctx.close_connection(id).expect("close_connection of a stale id");
            }
            for sender in &stale_senders {
                assert!(sender.is_closed());
                assert!(
                    matches!(sender.send(b"STALE-BYTES"), Err(SendError::Closed)),
                    "a sender of a closed connection must refuse with Closed"
                );
            }
        }

        // Every id distinct: ids are never reused.
        let all = rec.connections();
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "ids were reused: {all:?}");

        // The live connections got nothing of the stale sends: each receives exactly its
        // own marker, then EOF.
        for (id, _) in &live {
            assert!(!rec.trace(*id).closed(), "{id} was closed by a stale close");
            ctx.send_to(*id, format!("MARK-{}", id.as_u64()).as_bytes())
                .expect("send to a live connection");
            ctx.close_connection(*id).unwrap();
        }
        for (id, mut stream) in live {
            let got = read_to_eof(&mut stream, WAIT);
            assert_bytes_eq(
                &got,
                format!("MARK-{}", id.as_u64()).as_bytes(),
                &format!("bytes received by {id}"),
            );
        }
        rec.wait_disconnects(opened, WAIT);
        rec.assert_all_closed_once();
        server.stop().unwrap();
    }

    /// 1,000 times: build a one-thread loop, start a server, echo one round trip, stop,
    /// drop. No fd and no thread may be left behind.
    ///
    /// It runs in a child process where it is the only test, so that no other test's
    /// descriptors or threads (nor the test harness's) come and go while it counts.
    fn start_stop_cycles_leak_nothing(backend: Backend) {
        if common_child::role().as_deref() != Some("leak-cycles") {
            let name = match backend {
                Backend::Uring => "start_stop_cycles_leak_nothing::uring",
                _ => "start_stop_cycles_leak_nothing::mio",
            };
            let mut child = ChildTest::spawn(name, "leak-cycles", &[]);
            child.expect("cycles", std::time::Duration::from_secs(120));
            child.wait_success(WAIT);
            return;
        }
        let cycle = |i: usize| {
            let event_loop = EventLoop::builder()
                .threads(1)
                .backend(backend)
                .buffer_count(4)
                .buffer_size(4096)
                .build()
                .unwrap_or_else(|e| panic!("cycle {i}: build: {e}"));
            assert_eq!(event_loop.backend(), backend);
            let server = start_server(&event_loop, server_config().build(), Echo::new());
            let mut stream = connect(addr_of(&server));
            stream.write_all(b"ping").unwrap();
            let got = read_exact_within(&mut stream, 4, WAIT);
            assert_eq!(&got, b"ping", "cycle {i}: echo");
            server.stop().unwrap();
            event_loop.stop();
            drop(server);
            drop(event_loop);
            drop(stream);
        };
        // One cycle first, so whatever the process sets up once (lazy statics) is not
        // counted as a leak.
        cycle(0);
        let fds_before = fd_list();
        let fd_count_before = fd_count();
        let threads_before = thread_count();
        for i in 1..=1000 {
            cycle(i);
        }
        // A joined thread can linger in /proc/self/task for a moment after join returns.
        if !try_poll_until(SHORT_WAIT, || thread_count() <= threads_before) {
            panic!(
                "threads leaked: {} before, {} after 1000 cycles",
                threads_before,
                thread_count()
            );
        }
        if !try_poll_until(SHORT_WAIT, || fd_count() <= fd_count_before) {
            let after = fd_list();
            let new: Vec<_> = after.iter().filter(|f| !fds_before.contains(f)).collect();
            panic!(
                "fds leaked: {} before, {} after 1000 cycles; new: {:?}",
                fd_count_before,
                fd_count(),
                &new[..new.len().min(20)]
            );
        }
        common_child::report("cycles", 1000);
    }

    /// `TcpServer::stop` closes every live connection (each with one `on_disconnect`,
    /// each client sees EOF), stops accepting (new connects are refused), and leaves the
    /// loop and its other servers running.
    fn server_stop_closes_connections_and_refuses_new(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&rec));
        let other_rec = Recorder::shared();
        let other = start_server(&event_loop, server_config().build(), Recording::echo(&other_rec));
        let addr = addr_of(&server);

        let mut clients = Vec::new();
        for i in 0..6u8 {
            let mut s = connect(addr);
            s.write_all(&[i]).unwrap();
            assert_eq!(read_exact_within(&mut s, 1, WAIT), [i]);
            clients.push(s);
        }
        rec.wait_connects(6, WAIT);
        assert_eq!(server.connection_count(), 6);

        server.stop().expect("TcpServer::stop");
        // Stopped accepting before stop returned.
        assert_refused(addr);

        for (i, s) in clients.iter_mut().enumerate() {
            match try_read_to_eof(s, WAIT) {
                Ok(rest) => assert!(rest.is_empty(), "client {i}: unexpected bytes {rest:?}"),
                Err((_, e)) => assert_ne!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut,
                    "client {i}: connection not closed by TcpServer::stop"
                ),
            }
        }
        rec.wait_disconnects(6, WAIT);
        rec.assert_all_closed_once();
        assert_eq!(rec.connects(), 6, "no connection may be accepted after stop");
        assert_eq!(server.connection_count(), 0);

        // Idempotent, and a stopped server cannot be started again.
        server.stop().expect("second TcpServer::stop");
        let err = server.start(&event_loop).expect_err("start after stop");
        assert!(matches!(network_error(err.as_ref()), NetworkError::InvalidState(_)));
        assert_refused(addr);

        // The loop still serves the other server.
        let mut s = connect(addr_of(&other));
        s.write_all(b"still here").unwrap();
        assert_eq!(read_exact_within(&mut s, 10, WAIT), b"still here");
        drop(s);
        other_rec.wait_disconnects(1, WAIT);
        other.stop().unwrap();
    }

    /// `EventLoop::stop` with output queued: a reader that keeps reading gets every
    /// queued byte, then EOF; then every connection has had its `on_disconnect`, the
    /// listener is closed and `stop` returns.
    fn event_loop_stop_flushes_queued_output(backend: Backend) {
        const LEN: usize = 8 << 20;
        let event_loop = Arc::new(event_loop_with(backend, |b| {
            b.stop_timeout(std::time::Duration::from_secs(30))
        }));
        let payload: Arc<Vec<u8>> = Arc::new(pattern(11, LEN));
        let rec = Recorder::shared();
        let to_send = Arc::clone(&payload);
        let queued = Arc::new(Shared::new(false));
        let queued_in_handler = Arc::clone(&queued);
        let handler = Recording::new(&rec).on_connect(move |ctx, id| {
            for chunk in to_send.chunks(256 * 1024) {
                ctx.send_to(id, chunk)?;
            }
            queued_in_handler.update(|q| *q = true);
            Ok(())
        });
        let config = server_config()
            .high_watermark(2 * LEN)
            .low_watermark(1024)
            .build();
        let server = start_server(&event_loop, config, handler);
        let addr = addr_of(&server);

        // A client with a small receive buffer that does not read yet, so most of the
        // payload stays queued in the library.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        socket.connect_timeout(&addr.into(), WAIT).unwrap();
        let mut stream: TcpStream = socket.into();
        let id = rec.wait_conn(0, WAIT);
        queued.wait_until(WAIT, "the payload to be queued in on_connect", |q| *q);
        let sender = server.context().sender(id).expect("sender of the live connection");
        assert!(
            sender.queued_bytes() > 0,
            "precondition: output must still be queued when the loop stops"
        );

        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let stopping = Arc::clone(&event_loop);
        let stopper = std::thread::spawn(move || {
            stopping.stop();
            let _ = done_tx.send(());
        });
        poll_until(WAIT, "EventLoop::stop to begin", || event_loop.is_stopped());

        let got = read_to_eof(&mut stream, std::time::Duration::from_secs(30));
        assert_eq!(got.len(), LEN, "every queued byte must be delivered before the close");
        assert_bytes_eq(&got, &payload, "bytes delivered during stop");

        done_rx
            .recv_timeout(WAIT)
            .expect("EventLoop::stop must return once the output is flushed");
        stopper.join().unwrap();
        rec.wait_closed(id, WAIT);
        rec.assert_all_closed_once();
        assert_eq!(server.connection_count(), 0);
        assert_refused(addr);
    }

    /// `stop` before `run`: `run` returns at once. `stop` from another thread while
    /// `run` blocks: `run` returns.
    fn stop_before_or_during_run_ends_run(backend: Backend) {
        let (tx, rx) = std::sync::mpsc::channel();

        let early = Arc::new(event_loop(backend));
        early.stop();
        assert!(early.is_stopped());
        let runner = Arc::clone(&early);
        let tx1 = tx.clone();
        std::thread::spawn(move || {
            let r = runner.run();
            let _ = tx1.send(("early", r.map_err(|e| e.to_string())));
        });
        let (which, result) = rx
            .recv_timeout(WAIT)
            .expect("run() after stop() must return at once");
        assert_eq!(which, "early");
        result.expect("run() after stop()");

        let late = Arc::new(event_loop(backend));
        let server = start_server(&late, server_config().build(), Echo::new());
        let runner = Arc::clone(&late);
        std::thread::spawn(move || {
            let r = runner.run();
            let _ = tx.send(("late", r.map_err(|e| e.to_string())));
        });
        // The loop serves while run() blocks.
        let mut s = connect(addr_of(&server));
        s.write_all(b"x").unwrap();
        assert_eq!(read_exact_within(&mut s, 1, WAIT), b"x");
        assert!(
            rx.try_recv().is_err(),
            "run() must block until stop() is called"
        );
        late.stop();
        let (which, result) = rx
            .recv_timeout(WAIT)
            .expect("run() must return after stop() from another thread");
        assert_eq!(which, "late");
        result.expect("run() after stop()");
        read_to_eof(&mut s, WAIT);
    }

    /// `stop` is idempotent and can be called from a handler, on a loop thread, without
    /// deadlock: the handler returns, `run` returns, the connection is closed.
    fn stop_is_idempotent_and_callable_from_a_handler(backend: Backend) {
        let event_loop = Arc::new(event_loop(backend));
        let handle: Arc<OnceLock<Weak<EventLoop>>> = Arc::new(OnceLock::new());
        let handler_stops = Arc::new(Shared::new(0usize));
        let rec = Recorder::shared();
        let (h, stops) = (Arc::clone(&handle), Arc::clone(&handler_stops));
        let handler = Recording::new(&rec).on_data(move |_ctx, _id, data| {
            if data.ends_with(b"stop") {
                let event_loop = h.get().and_then(Weak::upgrade).expect("the loop is alive");
                event_loop.stop();
                event_loop.stop();
                assert!(event_loop.is_stopped());
                stops.update(|n| *n += 1);
            }
            Ok(())
        });
        handle.set(Arc::downgrade(&event_loop)).unwrap();
        let server = start_server(&event_loop, server_config().build(), handler);

        let (tx, rx) = std::sync::mpsc::channel();
        let runner = Arc::clone(&event_loop);
        std::thread::spawn(move || {
            let r = runner.run();
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });

        let mut s = connect(addr_of(&server));
        s.write_all(b"please stop").unwrap();
        handler_stops.wait_until(WAIT, "stop() to return inside the handler", |n| *n == 1);
        rx.recv_timeout(WAIT)
            .expect("run() must return after stop() from a handler")
            .expect("run()");
        read_to_eof(&mut s, WAIT);
        rec.wait_disconnects(1, WAIT);
        rec.assert_all_closed_once();

        // Further calls, from outside, do nothing and return.
        event_loop.stop();
        event_loop.stop();
        assert!(event_loop.is_stopped());
        assert_refused(addr_of(&server));
    }
}
