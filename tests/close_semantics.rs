//! mill-net's close and error semantics: `TcpServer::stop` returns once every connection
//! is closed and its `on_disconnect` delivered; `connection_count()` counts a connection
//! until its `on_disconnect` has returned; a closed connection has no sender and
//! refuses even an empty frame; a peer's reset is reported before `on_disconnect`; a
//! socket option that fails on an accepted socket is reported as `Configuration`;
//! `close()` / `close_connection` discard what the socket does not take at once and
//! close without lingering (`close_gracefully` keeps the flushing close);
//! `TcpClient::disconnect` and drop have run `on_disconnect` when they return; a client's
//! peer leaving mid-handshake is `Io(UnexpectedEof)`; a port a server holds cannot be
//! bound by anyone else unless `reuse_port(true)` asks to share it.

mod common;
#[cfg(target_os = "linux")]
mod seccomp;

use common::*;
use ringmill::layer::Socks5;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A client recording into `rec`, started on `event_loop`.
fn start_client(
    event_loop: &EventLoop,
    addr: SocketAddr,
    rec: &Arc<Recorder>,
) -> TcpClient<Recording> {
    let mut client =
        TcpClient::connect(addr, TcpClientConfig::default(), Recording::new(rec)).expect("client");
    client.start(event_loop).expect("client start");
    client
}

/// The I/O error kind of a failed `bind` (an `io::Error`, or `NetworkError::Io`).
fn io_kind(e: &(dyn std::error::Error + Send + Sync + 'static)) -> std::io::ErrorKind {
    if let Some(e) = e.downcast_ref::<std::io::Error>() {
        return e.kind();
    }
    match network_error(e) {
        err @ NetworkError::Io(_) => err.io_error().expect("an io::Error").kind(),
        other => panic!("expected Io(..), got {other:?}"),
    }
}

backend_matrix! {
    /// `stop()` returns only once every connection of the server is closed and its
    /// `on_disconnect` has run: checked right after `stop()` returns, 1,000 times in a row
    /// with three live connections each time.
    fn stop_returns_after_every_disconnect(backend: Backend) {
        let event_loop = event_loop(backend);
        for round in 0..1000 {
            let rec = Recorder::shared();
            let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
            let addr = addr_of(&server);
            let peers: Vec<_> = (0..3).map(|_| connect(addr)).collect();
            rec.wait_connects(3, WAIT);
            server.stop().expect("stop");
            let (count, disconnects) = (server.connection_count(), rec.disconnects());
            assert!(
                count == 0 && disconnects == 3,
                "round {round}: stop() returned with {count} connections open and {disconnects} \
                 of 3 on_disconnect delivered: {:?}",
                rec.with(|r| format!("{r:?}"))
            );
            drop(peers);
        }
    }

    /// `stop()` called inside a callback, on the loop thread, does not wait (it cannot: the
    /// loop delivers the disconnects) and does not deadlock; the disconnects follow.
    fn stop_from_a_callback_does_not_deadlock(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let slot: Arc<OnceLock<TcpServer<Recording>>> = Arc::new(OnceLock::new());
        let inner = Arc::clone(&slot);
        let returned = Arc::new(Shared::new(false));
        let flag = Arc::clone(&returned);
        let handler = Recording::new(&rec).on_data(move |_, _, _| {
            inner.get().expect("server set").stop()?;
            flag.update(|r| *r = true);
            Ok(())
        });
        let server = TcpServer::new(server_config().build(), handler).expect("server");
        server.start(&event_loop).expect("start");
        let addr = addr_of(&server);
        let _ = slot.set(server);
        let mut a = connect(addr);
        let _b = connect(addr);
        rec.wait_connects(2, WAIT);
        a.write_all(b"stop").unwrap();
        returned.wait_until(WAIT, "stop() to return inside on_data", |r| *r);
        rec.wait_disconnects(2, WAIT);
        // The count falls once each `on_disconnect` has returned, just after it recorded.
        poll_until(WAIT, "connection_count() to fall to 0", || {
            slot.get().unwrap().connection_count() == 0
        });
        rec.assert_no_violations();
    }

    /// A callback that calls `stop()` on its own server while another thread's `stop()`
    /// waits for the disconnects neither blocks nor holds that wait up.
    fn stop_from_on_disconnect_during_a_stop(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let slot: Arc<OnceLock<TcpServer<Recording>>> = Arc::new(OnceLock::new());
        let inner = Arc::clone(&slot);
        let handler = Recording::new(&rec).on_disconnect(move |_, _| {
            inner.get().expect("server set").stop()
        });
        let server = TcpServer::new(server_config().build(), handler).expect("server");
        server.start(&event_loop).expect("start");
        let addr = addr_of(&server);
        let _ = slot.set(server);
        let _peers: Vec<_> = (0..3).map(|_| connect(addr)).collect();
        rec.wait_connects(3, WAIT);
        let (tx, rx) = std::sync::mpsc::channel();
        let stopper = Arc::clone(&slot);
        std::thread::spawn(move || {
            stopper.get().unwrap().stop().expect("stop");
            let _ = tx.send(stopper.get().unwrap().connection_count());
        });
        let left = rx
            .recv_timeout(WAIT)
            .expect("stop() did not return while a callback called stop() too");
        assert_eq!(left, 0);
        assert_eq!(rec.disconnects(), 3);
    }

    /// A closing connection counts in `connection_count()` until its `on_disconnect` has
    /// returned, so a count of 0 seen from outside means every `on_disconnect` is over;
    /// inside that `on_disconnect` it no longer counts (what remains is the others).
    fn connection_count_covers_on_disconnect(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let inside: Arc<Shared<Vec<usize>>> = Arc::new(Shared::new(Vec::new()));
        let release = Arc::new(Shared::new(false));
        let (seen, gate) = (Arc::clone(&inside), Arc::clone(&release));
        let handler = Recording::new(&rec).on_disconnect(move |ctx, _| {
            seen.update(|v| v.push(ctx.connection_count()));
            gate.wait_until(WAIT, "the test to let on_disconnect return", |go| *go);
            Ok(())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let addr = addr_of(&server);
        let first = connect(addr);
        let _second = connect(addr);
        rec.wait_connects(2, WAIT);
        drop(first);
        inside.wait_until(WAIT, "on_disconnect of the dropped peer", |v| !v.is_empty());
        let (outside, open) = (server.connection_count(), server.metrics().open);
        release.update(|go| *go = true);
        assert_eq!(
            inside.with(|v| v[0]),
            1,
            "inside its own on_disconnect a connection no longer counts"
        );
        assert_eq!(
            (outside, open),
            (2, 2),
            "seen from outside, a connection counts until its on_disconnect returns"
        );
        poll_until(WAIT, "connection_count() to fall to 1", || server.connection_count() == 1);
        rec.wait_disconnects(1, WAIT);
    }

    /// Once a connection was closed, `ctx.sender(conn)` is `None`, `send_to` says
    /// `ConnectionNotFound`, and a sender taken before refuses even an empty frame with
    /// `Closed`.
    fn closed_connection_has_no_sender(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let seen: Arc<Shared<Vec<String>>> = Arc::new(Shared::new(Vec::new()));
        let out = Arc::clone(&seen);
        let handler = Recording::new(&rec).on_data(move |ctx, conn, _| {
            let sender = ctx.sender(conn).expect("an open connection has a sender");
            sender.close();
            ctx.close_connection(conn)?;
            let mut found = Vec::new();
            if ctx.sender(conn).is_some() {
                found.push("ctx.sender(conn) is Some after close".to_string());
            }
            for frame in [&b""[..], b"late"] {
                match sender.send(frame) {
                    Err(SendError::Closed) => {}
                    other => found.push(format!("send({frame:?}) after close: {other:?}")),
                }
            }
            match ctx.send_to(conn, b"late") {
                Err(e) if matches!(network_error(&*e), NetworkError::ConnectionNotFound(c) if *c == conn) => {}
                other => found.push(format!("send_to after close: {other:?}")),
            }
            out.update(|v| {
                v.extend(found);
                v.push("done".into());
            });
            Ok(())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut peer = connect(addr_of(&server));
        peer.write_all(b"x").unwrap();
        seen.wait_until(WAIT, "on_data to run", |v| v.last().is_some_and(|s| s == "done"));
        let problems = seen.with(|v| v[..v.len() - 1].to_vec());
        assert!(problems.is_empty(), "{problems:?}");
        rec.wait_disconnects(1, WAIT);
    }

    /// A peer's reset is reported as `on_error(Some(id), Io(ConnectionReset))`, before
    /// `on_disconnect`, and nothing follows `on_disconnect`.
    fn peer_reset_is_reported_before_disconnect(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let peer = connect(addr_of(&server));
        let id = rec.wait_conn(0, WAIT);
        reset_close(peer);
        rec.wait_closed(id, WAIT);
        let events = rec.trace(id).events;
        assert_eq!(
            events,
            vec![Ev::Connect, Ev::Error("Io(ConnectionReset)".into()), Ev::Disconnect],
            "reset not reported before on_disconnect"
        );
        rec.assert_no_violations();
    }

    /// `close()` from a timer on a connection whose peer reads nothing discards what is
    /// queued and closes at once, well within the (long) close linger.
    fn close_discards_and_does_not_linger(backend: Backend) {
        let event_loop = event_loop_with(backend, |b| b.close_linger(Duration::from_secs(60)));
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let _peer = connect(addr_of(&server)); // never reads, never closes
        let id = rec.wait_conn(0, WAIT);
        let sender = server.context().sender(id).expect("sender");
        // Fill the socket and the queue until the connection pushes back.
        let frame = vec![7u8; 64 * 1024];
        poll_until(WAIT, "the queue to push back", || {
            matches!(sender.send(&frame), Err(SendError::Backpressure))
        });
        let closer = sender.clone();
        event_loop
            .try_schedule_once(Duration::from_millis(50), move || closer.close())
            .expect("timer");
        // The linger is 60 s: only a discarding close gets here within WAIT.
        rec.wait_closed(id, WAIT);
        poll_until(WAIT, "connection_count() to fall to 0", || server.connection_count() == 0);
    }

    /// `close_connection` from a timer behaves the same.
    fn close_connection_discards_and_does_not_linger(backend: Backend) {
        let event_loop = event_loop_with(backend, |b| b.close_linger(Duration::from_secs(60)));
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let _peer = connect(addr_of(&server));
        let id = rec.wait_conn(0, WAIT);
        let ctx = server.context();
        let frame = vec![7u8; 64 * 1024];
        poll_until(WAIT, "the queue to push back", || {
            matches!(ctx.send_to(id, &frame), Err(e) if matches!(e.downcast_ref::<SendError>(), Some(SendError::Backpressure)))
        });
        let closer = server.context();
        event_loop
            .try_schedule_once(Duration::from_millis(50), move || {
                closer.close_connection(id).expect("close_connection");
            })
            .expect("timer");
        rec.wait_closed(id, WAIT);
    }

    /// A reply sent just before `close_connection` still reaches a peer whose socket has
    /// room: what the socket takes at once is written, then the connection closes.
    fn reply_then_close_reaches_the_peer(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let handler = Recording::new(&rec).on_data(|ctx, conn, _| {
            ctx.send_to(conn, b"bye")?;
            ctx.close_connection(conn)
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut peer = connect(addr_of(&server));
        peer.write_all(b"x").unwrap();
        assert_eq!(read_to_eof(&mut peer, WAIT), b"bye");
        rec.wait_disconnects(1, WAIT);
    }

    /// `close_gracefully` keeps the flushing close: everything queued reaches the peer.
    fn close_gracefully_writes_everything(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let handler = Recording::new(&rec).on_data(|ctx, conn, _| {
            let sender = ctx.sender(conn).expect("sender");
            for _ in 0..64 {
                sender.send(&[5u8; 16 * 1024]).map_err(NetworkError::Send)?;
            }
            sender.close_gracefully();
            Ok(())
        });
        let server = start_server(
            &event_loop,
            server_config().high_watermark(4 << 20).low_watermark(1 << 20).build(),
            handler,
        );
        let mut peer = connect(addr_of(&server));
        peer.write_all(b"x").unwrap();
        let got = read_to_eof(&mut peer, WAIT);
        assert_eq!(got.len(), 64 * 16 * 1024);
        rec.wait_disconnects(1, WAIT);
    }

    /// `TcpClient::disconnect()` has run the client's `on_disconnect` when it returns.
    fn client_disconnect_runs_on_disconnect_before_returning(backend: Backend) {
        let event_loop = event_loop(backend);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let rec = Recorder::shared();
        let client = start_client(&event_loop, listener.local_addr().unwrap(), &rec);
        let (_peer, _) = listener.accept().unwrap();
        rec.wait_connects(1, WAIT);
        client.disconnect().expect("disconnect");
        assert_eq!(rec.disconnects(), 1, "disconnect() returned before on_disconnect");
        assert!(matches!(client.send(b""), Err(SendError::Closed)));
    }

    /// Dropping a client has run its `on_disconnect` when the drop returns.
    fn client_drop_runs_on_disconnect_before_returning(backend: Backend) {
        let event_loop = event_loop(backend);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let rec = Recorder::shared();
        let client = start_client(&event_loop, listener.local_addr().unwrap(), &rec);
        let (_peer, _) = listener.accept().unwrap();
        rec.wait_connects(1, WAIT);
        drop(client);
        assert_eq!(rec.disconnects(), 1, "drop returned before on_disconnect");
    }

    /// `disconnect()` called inside the client's own callback does not deadlock.
    fn client_disconnect_from_its_callback(backend: Backend) {
        let event_loop = event_loop(backend);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let rec = Recorder::shared();
        let slot: Arc<Mutex<Option<Arc<TcpClient<Recording>>>>> = Arc::new(Mutex::new(None));
        let inner = Arc::clone(&slot);
        let handler = Recording::new(&rec).on_data(move |_, _, _| {
            let client = inner.lock().unwrap().clone().expect("client set");
            client.disconnect()
        });
        let mut client =
            TcpClient::connect(listener.local_addr().unwrap(), TcpClientConfig::default(), handler)
                .expect("client");
        client.start(&event_loop).expect("start");
        let client = Arc::new(client);
        *slot.lock().unwrap() = Some(Arc::clone(&client));
        let (mut peer, _) = listener.accept().unwrap();
        rec.wait_connects(1, WAIT);
        peer.write_all(b"x").unwrap();
        rec.wait_disconnects(1, WAIT);
        slot.lock().unwrap().take();
    }

    /// A peer that closes during a client's layer handshake is `Io(UnexpectedEof)`.
    fn peer_close_during_client_handshake_is_unexpected_eof(backend: Backend) {
        let event_loop = event_loop(backend);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let rec = Recorder::shared();
        let mut client = TcpClient::connect(
            listener.local_addr().unwrap(),
            TcpClientConfig::default(),
            Recording::new(&rec),
        )
        .unwrap()
        .with_layer(Socks5::to_host("example.org", 80))
        .unwrap();
        client.start(&event_loop).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut greeting = [0u8; 3];
        peer.read_exact(&mut greeting).unwrap();
        drop(peer);
        let error = rec.wait_error("Io", WAIT);
        assert_eq!(error.kind, "Io(UnexpectedEof)", "{error:?}");
        assert_eq!(error.conn, Some(client.id()));
        assert_eq!(rec.connects(), 0);
    }

    /// `with_layer` after `start` is a `Configuration` error.
    fn with_layer_after_start_is_configuration(backend: Backend) {
        let event_loop = event_loop(backend);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let rec = Recorder::shared();
        let client = start_client(&event_loop, listener.local_addr().unwrap(), &rec);
        let e = client.with_layer(Socks5::to_host("example.org", 80)).unwrap_err();
        assert!(
            matches!(network_error(&*e), NetworkError::Configuration(_)),
            "got {e:?}"
        );
    }

    /// A second server on the address a server holds gets `AddrInUse`, and so does a std
    /// listener; a server on an address a std listener holds gets it too.
    fn binding_a_held_address_is_addr_in_use(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let addr = addr_of(&server);
        let second = TcpServer::new(server_config().address(addr).build(), Silent);
        match second {
            Ok(_) => panic!("a second server bound {addr}, which the first one holds"),
            Err(e) => assert_eq!(io_kind(&*e), std::io::ErrorKind::AddrInUse),
        }
        let std_bind = TcpListener::bind(addr);
        assert_eq!(
            std_bind.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::AddrInUse)
        );
        // The server still serves.
        let _peer = connect(addr);
        rec.wait_connects(1, WAIT);

        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = held.local_addr().unwrap();
        match TcpServer::new(server_config().address(taken).build(), Silent) {
            Ok(_) => panic!("a server bound {taken}, which a std listener holds"),
            Err(e) => assert_eq!(io_kind(&*e), std::io::ErrorKind::AddrInUse),
        }
    }

    /// `reuse_port(true)` opts into sharing: two such servers may bind one address.
    fn reuse_port_opts_into_sharing(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let first = start_server(
            &event_loop,
            server_config().reuse_port(true).build(),
            Recording::new(&rec),
        );
        let addr = addr_of(&first);
        let second = start_server(
            &event_loop,
            server_config().address(addr).reuse_port(true).build(),
            Recording::new(&rec),
        );
        assert_eq!(addr_of(&second), addr);
        let _peer = connect(addr);
        rec.wait_connects(1, WAIT);
    }
}

/// A zero or sub-second keep-alive (which no kernel takes: the idle time is set in whole
/// seconds) fails validation, with a clear error. A value above what the system accepts
/// passes validation, for a server and a client alike: the system's refusal is reported per
/// connection, as mill-net does (see the tests below and `handler_errors.rs`).
#[test]
fn impossible_keep_alive_fails_validation() {
    for bad in [Duration::ZERO, Duration::from_millis(500)] {
        let config = server_config().keep_alive(Some(bad)).build();
        match TcpServer::new(config, Silent) {
            Ok(_) => panic!("keep_alive {bad:?} accepted"),
            Err(e) => assert!(
                matches!(network_error(&*e), NetworkError::Configuration(_)),
                "keep_alive {bad:?}: {e:?}"
            ),
        }
        let client_config = TcpClientConfig {
            keep_alive: Some(bad),
            ..TcpClientConfig::default()
        };
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        match TcpClient::connect(addr, client_config, Silent) {
            Ok(_) => panic!("client keep_alive {bad:?} accepted"),
            Err(e) => assert!(
                matches!(network_error(&*e), NetworkError::Configuration(_)),
                "client keep_alive {bad:?}: {e:?}"
            ),
        }
    }
    let huge = Duration::from_secs(1 << 20);
    TcpServer::new(server_config().keep_alive(Some(huge)).build(), Silent)
        .expect("a keep_alive above the system's limit passes validation");
    let client_config = TcpClientConfig {
        keep_alive: Some(huge),
        ..TcpClientConfig::default()
    };
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let _client = TcpClient::connect(addr, client_config, Silent)
        .expect("a client keep_alive above the system's limit is reported, not refused");
}

backend_matrix! {
    /// A client keep-alive the system refuses (Linux: above 32,767 s) is reported to
    /// `on_error` with the client's id, and the connection goes on without it.
    fn client_keep_alive_the_system_refuses_is_reported_with_the_id(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&srec));
        let crec = Recorder::shared();
        let config = TcpClientConfig {
            keep_alive: Some(Duration::from_secs(1 << 20)),
            ..TcpClientConfig::default()
        };
        let mut client = TcpClient::connect(addr_of(&server), config, Recording::new(&crec))
            .expect("TcpClient::connect");
        client.start(&event_loop).expect("start");
        let id = crec.wait_conn(0, WAIT);
        client.send(b"still works").expect("send");
        crec.wait_bytes(id, 11, WAIT);
        if cfg!(target_os = "linux") {
            let errors = crec.errors();
            assert!(
                errors.iter().any(|e| e.conn == Some(client.id()) && e.kind == "Configuration"),
                "{backend}: the refused keep-alive was not reported with the id: {errors:?}"
            );
        }
        drop(client);
        event_loop.stop();
        crec.assert_all_closed_once();
    }
}

/// Installs, on the calling thread and the threads it starts from now on, a seccomp filter
/// under which `setsockopt(_, IPPROTO_TCP, TCP_KEEPIDLE, ..)` fails with `EINVAL`, as for a
/// value the system refuses; every other call is allowed.
#[cfg(all(target_os = "linux", target_endian = "little"))]
fn refuse_tcp_keepidle() -> std::io::Result<()> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // `struct seccomp_data`: nr at 0, arch at 4, ip at 8, args[i] at 16 + 8 i (the low
    // half first, on a little-endian machine).
    let insn = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let filter = [
        insn(LD_W_ABS, 0, 0, 0),
        insn(JEQ_K, 0, 5, libc::SYS_setsockopt as u32),
        insn(LD_W_ABS, 0, 0, 24),
        insn(JEQ_K, 0, 3, libc::IPPROTO_TCP as u32),
        insn(LD_W_ABS, 0, 0, 32),
        insn(JEQ_K, 0, 1, libc::TCP_KEEPIDLE as u32),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    seccomp::install(&filter)
}

#[cfg(all(target_os = "linux", target_endian = "little"))]
backend_matrix! {
    /// A socket option the system refuses on an accepted socket is reported as
    /// `on_error(Some(id), Configuration(..))`, with the id the connection then gets in
    /// `on_connect`; the connection is served anyway.
    fn refused_socket_option_is_reported(backend: Backend) {
        // The loop threads are started by a thread under the filter, so they inherit it;
        // the test's own threads do not.
        let event_loop = std::thread::spawn(move || {
            refuse_tcp_keepidle().expect("seccomp filter");
            event_loop(backend)
        })
        .join()
        .expect("building the filtered loop");
        let rec = Recorder::shared();
        let server = start_server(
            &event_loop,
            server_config().keep_alive(Some(Duration::from_secs(30))).build(),
            Recording::echo(&rec),
        );
        let mut peer = connect(addr_of(&server));
        let id = rec.wait_conn(0, WAIT);
        let errors = rec.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].conn, Some(id));
        assert_eq!(errors[0].kind, "Configuration");
        assert!(errors[0].message.contains("SO_KEEPALIVE"), "{:?}", errors[0]);
        peer.write_all(b"still served").unwrap();
        assert_eq!(read_exact_within(&mut peer, 12, WAIT), b"still served");
    }
}
