//! Client and timeout conformance (contract lines 1, 3, 10): `TcpClient` connects and
//! echoes through a ringmill server, queues frames sent before the handshake, reports a
//! refused or timed-out connect with `on_error(Some(id), Connect(..))` and no
//! `on_connect`/`on_disconnect`, closes on `disconnect()` and on drop; the server's idle
//! timeout closes silent connections and spares busy ones.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// A client with `config`, recording into `rec`, started on `event_loop`.
fn start_client(
    event_loop: &EventLoop,
    addr: SocketAddr,
    config: TcpClientConfig,
    rec: &Arc<Recorder>,
) -> TcpClient<Recording> {
    let mut client = TcpClient::connect(addr, config, Recording::new(rec)).expect("TcpClient");
    client.start(event_loop).expect("TcpClient::start");
    client
}

/// A loopback port nothing listens on (bound, then closed).
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// Stops the loop (joining its threads), so that no callback can still be on its way.
fn settle(event_loop: EventLoop) {
    event_loop.stop();
    drop(event_loop);
}

backend_matrix! {
    /// A client connects to a ringmill echo server, sends 256 KiB in frames, and gets
    /// every byte back in order; both sides see one connection.
    fn client_echo_through_server(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&srec));
        let crec = Recorder::shared();
        let client = start_client(
            &event_loop,
            addr_of(&server),
            TcpClientConfig::default(),
            &crec,
        );
        let id = crec.wait_conn(0, WAIT);
        assert_eq!(id, client.id(), "the handler sees the client's id");
        assert!(client.is_connected());

        let payload = pattern(21, 256 * 1024);
        for frame in payload.chunks(1000) {
            client.send(frame).expect("send within the watermark");
        }
        crec.wait_bytes(id, payload.len(), WAIT);
        assert_bytes_eq(&crec.received(id), &payload, "echo received by the client");
        let sid = srec.wait_conn(0, WAIT);
        assert_bytes_eq(&srec.received(sid), &payload, "bytes received by the server");
        assert_ne!(sid, id, "server and client connections have their own ids");

        client.disconnect().unwrap();
        crec.wait_closed(id, WAIT);
        srec.wait_closed(sid, WAIT);
        crec.assert_all_closed_once();
        srec.assert_all_closed_once();
        assert!(!client.is_connected());
    }

    /// Frames sent before `start` (and right after it, before the handshake completes)
    /// are queued and written, in order, once the connection is established.
    fn frames_sent_before_handshake_are_flushed(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&srec));
        let crec = Recorder::shared();
        let mut client = TcpClient::connect(
            addr_of(&server),
            TcpClientConfig::default(),
            Recording::new(&crec),
        )
        .unwrap();
        assert!(!client.is_connected());
        client.send(b"one,").expect("queued before start");
        client.send(b"").expect("an empty frame is a no-op");
        client.sender().send(b"two,").expect("queued through a sender");
        client.start(&event_loop).unwrap();
        client.send(b"three").expect("queued while connecting");

        let sid = srec.wait_conn(0, WAIT);
        srec.wait_bytes(sid, 13, WAIT);
        assert_bytes_eq(&srec.received(sid), b"one,two,three", "bytes the server got");
        crec.wait_conn(0, WAIT);
        // Nothing before on_connect, in the client's trace.
        crec.assert_no_violations();
        let err = client.start(&event_loop).expect_err("a second start");
        assert!(matches!(network_error(err.as_ref()), NetworkError::InvalidState(_)));
        drop(client);
        srec.wait_closed(sid, WAIT);
    }

    /// Connecting to a port with no listener: `on_error(Some(id), Connect(e))` with
    /// `ConnectionRefused`, and neither `on_connect` nor `on_disconnect`; the client
    /// refuses sends afterwards.
    fn refused_connect_reports_connect_error(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let client = start_client(&event_loop, closed_port(), TcpClientConfig::default(), &rec);
        let error = rec.wait_error("Connect", WAIT);
        assert_eq!(error.kind, "Connect(ConnectionRefused)", "{}", error.message);
        assert_eq!(error.conn, Some(client.id()));
        assert!(!client.is_connected());
        settle(event_loop);
        assert_eq!(rec.connects(), 0, "no on_connect for a refused connect");
        assert_eq!(rec.disconnects(), 0, "no on_disconnect for a refused connect");
        assert_eq!(rec.errors().len(), 1, "one error: {:?}", rec.errors());
        assert!(matches!(client.send(b"late"), Err(SendError::Closed)));
    }

    /// A handshake that never completes (the listener's backlog is full and it never
    /// accepts, so the kernel drops the SYNs): `on_error(Some(id), Connect(TimedOut))`
    /// after the connect timeout, no `on_connect`, no `on_disconnect`.
    fn connect_timeout_reports_timed_out(backend: Backend) {
        let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .unwrap();
        listener
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        listener.listen(1).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        // Fill the accept queue until a handshake stalls.
        let mut fillers = Vec::new();
        loop {
            assert!(fillers.len() < 64, "the accept queue never filled up");
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => fillers.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                Err(e) => panic!("filling the backlog: {e}"),
            }
        }

        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let config = TcpClientConfig {
            connect_timeout: Duration::from_millis(300),
            ..TcpClientConfig::default()
        };
        let client = start_client(&event_loop, addr, config, &rec);
        let error = rec.wait_error("Connect", WAIT);
        assert_eq!(error.kind, "Connect(TimedOut)", "{}", error.message);
        assert_eq!(error.conn, Some(client.id()));
        settle(event_loop);
        assert_eq!(rec.connects(), 0, "no on_connect for a timed-out connect");
        assert_eq!(rec.disconnects(), 0, "no on_disconnect for a timed-out connect");
        assert_eq!(rec.errors().len(), 1, "one error: {:?}", rec.errors());
        assert!(!client.is_connected());
        drop(fillers);
    }

    /// Server idle timeout: a connection that sends nothing is closed after the timeout
    /// (`on_error(Some(id), IdleTimeout(id))`, then `on_disconnect`, and the client sees
    /// EOF), while one that keeps sending stays open well past it; once that one falls
    /// silent, it is closed too.
    fn idle_timeout_closes_silent_connections_only(backend: Backend) {
        const IDLE: Duration = Duration::from_millis(800);
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let config = server_config().idle_timeout(IDLE).build();
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let addr = addr_of(&server);

        let mut busy = connect(addr);
        busy.write_all(b"b").unwrap();
        assert_eq!(read_exact_within(&mut busy, 1, WAIT), b"b");
        let busy_id = rec.wait_conn(0, WAIT);
        let mut silent = connect(addr);
        let silent_id = rec.wait_conn(1, WAIT);

        // The busy client sends a byte every 50 ms and checks its echo, until told to stop.
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let pacer = std::thread::spawn(move || {
            let mut rounds = 0usize;
            loop {
                busy.write_all(b"k").unwrap();
                let mut b = [0u8; 1];
                busy.read_exact(&mut b).expect("the busy connection must stay open");
                rounds += 1;
                // Pacing between sends (not a synchronisation): the stop signal or 50 ms.
                match stop_rx.recv_timeout(Duration::from_millis(50)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return (busy, rounds),
                }
            }
        });

        // The silent one is closed with IdleTimeout, then on_disconnect, then EOF.
        rec.wait_closed(silent_id, Duration::from_secs(10));
        let t = rec.trace(silent_id);
        assert_eq!(
            t.events,
            vec![Ev::Connect, Ev::Error("IdleTimeout".into()), Ev::Disconnect],
            "the silent connection's trace"
        );
        assert!(
            rec.errors()
                .iter()
                .any(|e| e.conn == Some(silent_id) && e.message.contains(&silent_id.to_string())),
            "IdleTimeout names the connection"
        );
        match try_read_to_eof(&mut silent, WAIT) {
            Ok(rest) => assert!(rest.is_empty()),
            Err((_, e)) => assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "no EOF: {e}"),
        }

        // The busy one outlives the silent one by more than two idle periods. Wait for
        // that long on the pacer's progress (the pacer would fail if it were closed).
        let closed = try_poll_until(IDLE * 2 + IDLE / 2, || rec.trace(busy_id).closed());
        assert!(!closed, "the busy connection was closed: {:?}", rec.trace(busy_id).events);
        stop_tx.send(()).unwrap();
        let (mut busy, rounds) = pacer.join().expect("the busy client failed");
        assert!(rounds > 0);
        assert!(
            !rec.trace(busy_id).errors().iter().any(|e| e == "IdleTimeout"),
            "the busy connection must not time out while it sends"
        );

        // Silent now: closed in turn.
        rec.wait_closed(busy_id, Duration::from_secs(10));
        assert!(rec.trace(busy_id).errors().iter().any(|e| e == "IdleTimeout"));
        let _ = try_read_to_eof(&mut busy, WAIT);
        rec.assert_all_closed_once();
        server.stop().unwrap();
    }

    /// `disconnect()` and dropping the client both close the connection: the server sees
    /// `on_disconnect`, the client's own handler too. `disconnect()` writes what was
    /// queued first.
    fn client_disconnect_and_drop_close(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&srec));
        let addr = addr_of(&server);

        // disconnect(), with data queued: the server gets it all, then the close.
        let crec = Recorder::shared();
        let client = start_client(&event_loop, addr, TcpClientConfig::default(), &crec);
        let cid = crec.wait_conn(0, WAIT);
        let sid = srec.wait_conn(0, WAIT);
        let payload = pattern(5, 512 * 1024);
        for frame in payload.chunks(64 * 1024) {
            client.send(frame).unwrap();
        }
        client.disconnect().unwrap();
        assert!(matches!(client.send(b"after"), Err(SendError::Closed)));
        srec.wait_closed(sid, WAIT);
        assert_bytes_eq(&srec.received(sid), &payload, "bytes written before the close");
        crec.wait_closed(cid, WAIT);
        assert!(!client.is_connected());
        client.disconnect().expect("a second disconnect does nothing");

        // Drop.
        let crec2 = Recorder::shared();
        let client2 = start_client(&event_loop, addr, TcpClientConfig::default(), &crec2);
        let cid2 = crec2.wait_conn(0, WAIT);
        let sid2 = srec.wait_conn(1, WAIT);
        let sender = client2.sender();
        drop(client2);
        srec.wait_closed(sid2, WAIT);
        crec2.wait_closed(cid2, WAIT);
        assert!(sender.is_closed());
        assert!(matches!(sender.send(b"x"), Err(SendError::Closed)));

        srec.assert_all_closed_once();
        crec.assert_all_closed_once();
        crec2.assert_all_closed_once();
        server.stop().unwrap();
    }
}
