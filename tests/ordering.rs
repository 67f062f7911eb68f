//! Contract 1 and 2: `on_connect` comes before any `on_data`; `on_disconnect` comes exactly
//! once per `on_connect` whatever ends the connection (client FIN, client RST, the
//! server's `close_connection`, `TcpServer::stop`, `EventLoop::stop`), and nothing comes
//! after it. Received bytes arrive in order, none lost or duplicated.
//!
//! "Nothing after `on_disconnect`" is checked once the event loop has been stopped (stop
//! joins the loop threads, so every callback that will ever run has run).

mod common;

use common::*;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::thread;

const CLIENTS: usize = 16;

/// Writes `data` in pieces of 1..=`max` bytes.
fn write_in_pieces(stream: &mut TcpStream, data: &[u8], seed: u64, max: usize) {
    let mut rng = Rng::new(seed);
    let mut at = 0;
    while at < data.len() {
        let n = rng.range(1, max).min(data.len() - at);
        stream.write_all(&data[at..at + n]).expect("client write");
        at += n;
    }
}

/// The trace is `Connect, (Data | Writable | Drained | Error)*, Disconnect`, with at most
/// the allowed errors.
#[track_caller]
fn assert_shape(trace: &ConnTrace, allowed_errors: &[&str]) {
    let ev = &trace.events;
    assert_eq!(ev.first(), Some(&Ev::Connect), "on_connect first: {ev:?}");
    assert_eq!(
        ev.last(),
        Some(&Ev::Disconnect),
        "on_disconnect last: {ev:?}"
    );
    assert_eq!(trace.connects(), 1, "one on_connect: {ev:?}");
    assert_eq!(trace.disconnects(), 1, "one on_disconnect: {ev:?}");
    for e in trace.errors() {
        assert!(
            allowed_errors.iter().any(|a| e.starts_with(a)),
            "unexpected error {e} in {ev:?}"
        );
    }
}

/// Opens `CLIENTS` connections, each sending its own pattern in small pieces, and returns
/// them with the server-side id and the pattern, once the server has every byte.
fn open_and_fill(
    rec: &Recorder,
    addr: std::net::SocketAddr,
    len: usize,
) -> Vec<(TcpStream, ConnectionId, Vec<u8>)> {
    (0..CLIENTS)
        .map(|i| {
            let mut s = connect(addr);
            let data = pattern(1000 + i as u64, len);
            write_in_pieces(&mut s, &data, i as u64, 3000);
            let id = rec.wait_peer(s.local_addr().unwrap(), WAIT);
            (s, id, data)
        })
        .map(|(s, id, data)| {
            rec.wait_bytes(id, data.len(), WAIT);
            (s, id, data)
        })
        .collect()
}

backend_matrix! {
    /// Clients that connect and write at once (often before the server has accepted),
    /// then close with a FIN: each connection's callbacks are `Connect, Data.., Disconnect`
    /// and the bytes are exactly what was sent, in order.
    fn client_fin(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let addr = addr_of(&server);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                thread::spawn(move || {
                    let mut s = connect(addr);
                    let data = pattern(i as u64, 100_000 + i * 1000);
                    write_in_pieces(&mut s, &data, i as u64, 5000);
                    let local = s.local_addr().unwrap();
                    drop(s);
                    (local, data)
                })
            })
            .collect();
        let sent: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        rec.wait_disconnects(CLIENTS, WAIT);
        event_loop.stop();
        rec.assert_all_closed_once();
        for (peer, data) in &sent {
            let id = rec.wait_peer(*peer, SHORT_WAIT);
            let trace = rec.trace(id);
            assert_shape(&trace, &[]);
            assert_bytes_eq(&trace.data, data, &format!("bytes received on {id}"));
        }
        assert_eq!(rec.connects(), CLIENTS);
    }

    /// Clients that reset (SO_LINGER 0) an established connection: one `on_disconnect`
    /// each, after all the bytes that arrived before the reset.
    fn client_rst(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let conns = open_and_fill(&rec, addr_of(&server), 20_000);
        let ids: Vec<_> = conns.iter().map(|(_, id, _)| *id).collect();
        let sent: Vec<_> = conns.iter().map(|(_, _, d)| d.clone()).collect();
        for (s, _, _) in conns {
            reset_close(s);
        }
        for id in &ids {
            rec.wait_closed(*id, WAIT);
        }
        event_loop.stop();
        rec.assert_all_closed_once();
        for (id, data) in ids.iter().zip(&sent) {
            let trace = rec.trace(*id);
            assert_shape(&trace, &["Io("]);
            assert_bytes_eq(&trace.data, data, &format!("bytes received on {id}"));
        }
    }

    /// `close_connection` from outside the loop: what was queued before it is written (the
    /// sockets have room, so the close's one last send takes it all), then the client sees
    /// EOF; one `on_disconnect` each; the id is gone afterwards.
    fn server_close_connection(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let ctx = server.context();
        let conns = open_and_fill(&rec, addr_of(&server), 10_000);
        for (_, id, _) in &conns {
            ctx.send_to(*id, format!("bye {id}").as_bytes()).unwrap();
            ctx.close_connection(*id).unwrap();
        }
        for (mut s, id, data) in conns {
            let got = read_to_eof(&mut s, WAIT);
            assert_eq!(got, format!("bye {id}").as_bytes(), "queued frame flushed before close");
            rec.wait_closed(id, WAIT);
            let e = ctx.send_to(id, b"late").expect_err("send to a closed id");
            assert!(
                matches!(network_error(&*e), NetworkError::ConnectionNotFound(x) if *x == id),
                "send to a closed connection: {e}"
            );
            assert_bytes_eq(&rec.received(id), &data, &format!("bytes received on {id}"));
        }
        event_loop.stop();
        rec.assert_all_closed_once();
        for id in rec.connections() {
            assert_shape(&rec.trace(id), &[]);
        }
    }

    /// `close_connection` from inside `on_data`: the connection ends once, and no
    /// `on_data` follows the close even though the client keeps writing.
    fn close_from_callback(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let handler = Recording::new(&rec).on_data(|ctx, id, _data| ctx.close_connection(id));
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut s = connect(addr_of(&server));
        let id = rec.wait_peer(s.local_addr().unwrap(), WAIT);
        s.write_all(b"first").unwrap();
        rec.wait_closed(id, WAIT);
        // The client may go on writing into a closed socket; that must not revive anything.
        let _ = s.write_all(&[0u8; 10_000]);
        let _ = try_read_to_eof(&mut s, SHORT_WAIT);
        event_loop.stop();
        rec.assert_all_closed_once();
        assert_shape(&rec.trace(id), &[]);
    }

    /// `TcpServer::stop`: every open connection gets one `on_disconnect`, clients see the
    /// end of the stream, and new connections are refused.
    fn server_stop(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let addr = addr_of(&server);
        let conns = open_and_fill(&rec, addr, 5_000);
        server.stop().unwrap();
        rec.wait_disconnects(CLIENTS, WAIT);
        for (mut s, id, data) in conns {
            match try_read_to_eof(&mut s, WAIT) {
                Ok(rest) => assert!(rest.is_empty(), "nothing was sent to the client"),
                Err((_, e)) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
            }
            assert_bytes_eq(&rec.received(id), &data, &format!("bytes received on {id}"));
        }
        let refused = TcpStream::connect(addr);
        assert!(
            matches!(&refused, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
            "a stopped server must not accept: {refused:?}"
        );
        // Nothing notifies when the count drops, so it is polled.
        poll_until(SHORT_WAIT, "connection_count() to fall to 0", || {
            server.connection_count() == 0
        });
        event_loop.stop();
        rec.assert_all_closed_once();
        assert_eq!(rec.connects(), CLIENTS);
        for id in rec.connections() {
            assert_shape(&rec.trace(id), &[]);
        }
    }

    /// `EventLoop::stop`: every open connection gets one `on_disconnect` before `stop`
    /// returns, and clients see the end of the stream.
    fn event_loop_stop(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let conns = open_and_fill(&rec, addr_of(&server), 5_000);
        event_loop.stop();
        assert_eq!(rec.disconnects(), CLIENTS, "stop returns after every on_disconnect");
        rec.assert_all_closed_once();
        for (mut s, id, data) in conns {
            match try_read_to_eof(&mut s, WAIT) {
                Ok(rest) => assert!(rest.is_empty()),
                Err((_, e)) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
            }
            assert_shape(&rec.trace(id), &[]);
            assert_bytes_eq(&rec.received(id), &data, &format!("bytes received on {id}"));
        }
    }

    /// Connections that close at once without sending anything still get a matched
    /// `on_connect`/`on_disconnect` pair (or none at all), never half of one.
    fn connect_and_close_at_once(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let addr = addr_of(&server);
        let peers: Vec<_> = (0..50)
            .map(|_| {
                let s = connect(addr);
                s.local_addr().unwrap()
            })
            .collect();
        // A FIN'd connection is still accepted, so every one of them shows up.
        for p in &peers {
            let id = rec.wait_peer(*p, WAIT);
            rec.wait_closed(id, WAIT);
        }
        event_loop.stop();
        rec.assert_all_closed_once();
        for id in rec.connections() {
            assert_eq!(rec.trace(id).events, vec![Ev::Connect, Ev::Disconnect]);
        }
    }

    /// Clients that connect, write and reset at once, racing the accept: each either
    /// never shows up or shows up as a full `Connect .. Disconnect` pair whose bytes are
    /// a prefix of what it sent; the server keeps serving.
    fn reset_racing_accept(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::new(&rec));
        let addr = addr_of(&server);
        let data = pattern(77, 5000);
        for _ in 0..50 {
            let mut s = connect(addr);
            let _ = s.write_all(&data);
            reset_close(s);
        }
        // A normal connection afterwards is served.
        let mut last = connect(addr);
        last.write_all(b"served").unwrap();
        let id = rec.wait_peer(last.local_addr().unwrap(), WAIT);
        rec.wait_bytes(id, 6, WAIT);
        drop(last);
        rec.wait_closed(id, WAIT);
        // Stopping joins the loop threads: every callback that will ever run has run.
        event_loop.stop();
        rec.assert_all_closed_once();
        for id in rec.connections() {
            let trace = rec.trace(id);
            assert_shape(&trace, &["Io("]);
            if trace.data != b"served" {
                assert_bytes_eq(&trace.data, &data[..trace.data.len()], "bytes before the reset");
            }
        }
    }
}
