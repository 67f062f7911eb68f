//! API conventions an adopting application relies on, on every backend: the peer's address
//! inside `on_connect`; a server on an existing `std::net::TcpListener` and a client on a
//! connected `std::net::TcpStream`; a client connecting by host name; IPv6 on `[::1]` and
//! what binding `[::]` does (`only_v6`); `try_send_to` returning the typed `SendError`.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

/// Peer addresses seen by `on_connect`, per connection.
type Peers = Arc<Shared<HashMap<ConnectionId, Option<SocketAddr>>>>;

/// A recording handler (echoing for a server, not for a client) that records
/// `ctx.peer_addr(conn)` as seen inside `on_connect`.
fn peer_recording(rec: &Arc<Recorder>, peers: &Peers, echo: bool) -> Recording {
    let peers = Arc::clone(peers);
    let handler = if echo {
        Recording::echo(rec)
    } else {
        Recording::new(rec)
    };
    handler.on_connect(move |ctx, conn| {
        let addr = ctx.peer_addr(conn);
        peers.update(|p| p.insert(conn, addr));
        Ok(())
    })
}

/// What `on_connect` of `id` saw (waiting for the hook, which runs after the recording).
fn seen_peer(peers: &Peers, id: ConnectionId) -> Option<SocketAddr> {
    peers.wait_map(WAIT, "on_connect's peer_addr", |p| p.get(&id).copied())
}

/// One echo round trip over `stream`.
fn round_trip(stream: &mut TcpStream, what: &str) {
    stream.write_all(what.as_bytes()).expect("write");
    let echo = read_exact_within(stream, what.len(), WAIT);
    assert_eq!(echo, what.as_bytes(), "echo of {what}");
}

/// A server on `addr` (with `only_v6`), or `None` with a named skip if the machine has no
/// IPv6 loopback.
fn v6_server<H: NetworkHandler>(
    event_loop: &EventLoop,
    addr: SocketAddr,
    only_v6: bool,
    handler: H,
) -> Option<TcpServer<H>> {
    if TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_err() {
        println!("skipped: no IPv6 loopback on this machine");
        eprintln!("skipped: no IPv6 loopback on this machine");
        return None;
    }
    let config = TcpServerConfig::builder()
        .address(addr)
        .only_v6(only_v6)
        .build();
    let server = TcpServer::new(config, handler).expect("TcpServer::new on IPv6");
    server.start(event_loop).expect("start");
    Some(server)
}

backend_matrix! {
    /// `ctx.peer_addr(conn)` inside `on_connect` is the client's address, for an accepted
    /// connection; for a client, the address it connected to. `ConnSender::peer_addr` too.
    fn peer_addr_is_known_in_on_connect(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let speers: Peers = Arc::default();
        let server = start_server(&event_loop, server_config().build(), peer_recording(&srec, &speers, true));
        let mut streams: Vec<TcpStream> = (0..4).map(|_| connect(addr_of(&server))).collect();
        for s in &mut streams {
            round_trip(s, "hi");
        }
        srec.wait_connects(4, WAIT);
        speers.wait_until(WAIT, "four on_connect hooks", |p| p.len() == 4);
        let seen: Vec<SocketAddr> = speers.with(|p| p.values().map(|a| a.expect("a peer address in on_connect")).collect());
        for s in &streams {
            let local = s.local_addr().unwrap();
            assert!(seen.contains(&local), "{backend}: {local} not among {seen:?}");
        }
        let id = srec.wait_conn(0, WAIT);
        let sender = server.context().sender(id).expect("open");
        assert!(seen.contains(&sender.peer_addr().expect("sender's peer")));

        let crec = Recorder::shared();
        let cpeers: Peers = Arc::default();
        let mut client = TcpClient::connect(addr_of(&server), TcpClientConfig::default(), peer_recording(&crec, &cpeers, false)).unwrap();
        client.start(&event_loop).unwrap();
        let cid = crec.wait_conn(0, WAIT);
        assert_eq!(Some(seen_peer(&cpeers, cid)), Some(Some(addr_of(&server))));
        client.disconnect().unwrap();
        crec.wait_closed(cid, WAIT);
        assert_eq!(server.context().peer_addr(cid), None, "another service's id is not found");
        drop(streams);
        srec.wait_disconnects(5, WAIT);
        event_loop.stop();
    }

    /// A server built on a bound `std::net::TcpListener` serves on every loop thread; its
    /// config reports the listener's address.
    fn server_from_a_std_listener(backend: Backend) {
        let event_loop = event_loop(backend);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let rec = Recorder::shared();
        let server = TcpServer::from_std(listener, TcpServerConfig::default(), Recording::echo(&rec)).unwrap();
        assert_eq!(addr_of(&server), addr);
        assert_eq!(server.config().address, addr);
        server.start(&event_loop).unwrap();
        let mut streams: Vec<TcpStream> = (0..8).map(|_| connect(addr)).collect();
        for (i, s) in streams.iter_mut().enumerate() {
            round_trip(s, &format!("message {i}"));
        }
        rec.wait_connects(8, WAIT);
        server.stop().unwrap();
        rec.wait_disconnects(8, WAIT);
        rec.assert_all_closed_once();
        event_loop.stop();
    }

    /// A client built on a connected `std::net::TcpStream`: `on_connect` at start, frames
    /// sent before start go out then, the echo comes back, and the close is clean.
    fn client_from_a_connected_std_stream(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = start_server(&event_loop, server_config().build(), Recording::echo(&srec));
        let stream = TcpStream::connect(addr_of(&server)).unwrap();
        let local = stream.local_addr().unwrap();
        let crec = Recorder::shared();
        let cpeers: Peers = Arc::default();
        let mut client = TcpClient::from_std(stream, TcpClientConfig::default(), peer_recording(&crec, &cpeers, false)).unwrap();
        client.send(b"held ").unwrap();
        client.start(&event_loop).unwrap();
        let id = crec.wait_conn(0, WAIT);
        assert_eq!(Some(seen_peer(&cpeers, id)), Some(Some(addr_of(&server))));
        client.send(b"and after").unwrap();
        crec.wait_bytes(id, 14, WAIT);
        assert_eq!(crec.received(id), b"held and after");
        let sid = srec.wait_peer(local, WAIT);
        client.disconnect().unwrap();
        crec.wait_closed(id, WAIT);
        srec.wait_closed(sid, WAIT);
        crec.assert_all_closed_once();
        assert!(crec.errors().is_empty(), "{:?}", crec.errors());

        // A stream that is not connected is refused at once, with the I/O error.
        let unconnected = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let err = TcpClient::from_std(TcpStream::from(unconnected), TcpClientConfig::default(), Silent).unwrap_err();
        assert!(err.downcast_ref::<std::io::Error>().is_some(), "{err}");
        event_loop.stop();
    }

    /// `TcpClient::connect_to("localhost:PORT")` resolves the name and connects (the
    /// server is dual stack where the machine has IPv6, so either answer of the resolver
    /// reaches it); a name without an address is an error at once.
    fn client_connects_by_host_name(backend: Backend) {
        let event_loop = event_loop(backend);
        let srec = Recorder::shared();
        let server = match v6_server(&event_loop, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)), false, Recording::echo(&srec)) {
            Some(server) => server,
            None => start_server(&event_loop, server_config().build(), Recording::echo(&srec)),
        };
        let port = addr_of(&server).port();
        let crec = Recorder::shared();
        let mut client = TcpClient::connect_to(format!("localhost:{port}"), TcpClientConfig::default(), Recording::new(&crec)).unwrap();
        client.start(&event_loop).unwrap();
        let id = crec.wait_conn(0, WAIT);
        client.send(b"by name").unwrap();
        crec.wait_bytes(id, 7, WAIT);
        assert_eq!(crec.received(id), b"by name");
        client.disconnect().unwrap();
        crec.wait_closed(id, WAIT);

        let err = TcpClient::connect_to("name.invalid:80", TcpClientConfig::default(), Silent).unwrap_err();
        assert!(err.downcast_ref::<std::io::Error>().is_some(), "{err}");
        event_loop.stop();
    }

    /// A server on `[::1]` serves an IPv6 client (skipped by name without IPv6 loopback).
    fn ipv6_loopback(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let peers: Peers = Arc::default();
        let Some(server) = v6_server(&event_loop, SocketAddr::from((Ipv6Addr::LOCALHOST, 0)), true, peer_recording(&rec, &peers, true)) else {
            return;
        };
        let mut stream = connect(addr_of(&server));
        round_trip(&mut stream, "over IPv6");
        let id = rec.wait_conn(0, WAIT);
        assert_eq!(Some(seen_peer(&peers, id)), Some(Some(stream.local_addr().unwrap())));

        let crec = Recorder::shared();
        let mut client = TcpClient::connect(addr_of(&server), TcpClientConfig::default(), Recording::new(&crec)).unwrap();
        client.start(&event_loop).unwrap();
        let cid = crec.wait_conn(0, WAIT);
        client.send(b"v6").unwrap();
        crec.wait_bytes(cid, 2, WAIT);
        client.disconnect().unwrap();
        crec.wait_closed(cid, WAIT);
        event_loop.stop();
    }

    /// Binding `[::]`: with `only_v6(true)` (the default) an IPv4 client is refused; with
    /// `only_v6(false)` it is served, its address showing IPv4-mapped.
    fn unspecified_v6_is_v6_only_unless_told(backend: Backend) {
        assert!(TcpServerConfig::default().only_v6, "the documented default");
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let Some(v6_only) = v6_server(&event_loop, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)), true, Recording::echo(&rec)) else {
            return;
        };
        let port = addr_of(&v6_only).port();
        // Nothing else listens on 127.0.0.1 at this port unless another process took it.
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"x").unwrap();
            assert_eq!(rec.connects(), 0, "{backend}: a v6-only server took an IPv4 client");
        }
        v6_only.stop().unwrap();

        let peers: Peers = Arc::default();
        let dual = v6_server(&event_loop, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)), false, peer_recording(&rec, &peers, true)).unwrap();
        let mut stream = TcpStream::connect(("127.0.0.1", addr_of(&dual).port())).unwrap();
        round_trip(&mut stream, "IPv4 to [::]");
        let id = rec.wait_conn(0, WAIT);
        let peer = seen_peer(&peers, id).expect("a peer address");
        let local = stream.local_addr().unwrap();
        match (peer, local) {
            (SocketAddr::V6(p), SocketAddr::V4(l)) => {
                assert_eq!(p.ip().to_ipv4_mapped(), Some(*l.ip()), "{peer} vs {local}");
                assert_eq!(p.port(), l.port());
            }
            other => panic!("{backend}: expected an IPv4-mapped peer, got {other:?}"),
        }
        event_loop.stop();
    }

    /// `try_send_to` returns the `SendError` itself: `Closed` for an id that is not open,
    /// `FrameTooLarge` over `max_frame`, `Backpressure` at the high watermark.
    fn try_send_to_returns_the_typed_error(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let config = server_config().high_watermark(64 * 1024).low_watermark(1024).max_frame(32 * 1024).build();
        let server = start_server(&event_loop, config, Recording::new(&rec));
        let stream = connect(addr_of(&server));
        let id = rec.wait_conn(0, WAIT);
        let ctx = server.context();
        assert!(ctx.try_send_to(id, b"hello").is_ok());
        match ctx.try_send_to(id, &vec![0u8; 40 * 1024]) {
            Err(SendError::FrameTooLarge { len, max }) => assert_eq!((len, max), (40 * 1024, 32 * 1024)),
            other => panic!("{backend}: {other:?}"),
        }
        // The peer never reads: the queue reaches the watermark.
        let frame = vec![7u8; 16 * 1024];
        let mut refused = None;
        poll_until(WAIT, "a refusal at the high watermark", || match ctx.try_send_to(id, &frame) {
            Ok(()) => false,
            Err(e) => {
                refused = Some(e);
                true
            }
        });
        assert!(matches!(refused, Some(SendError::Backpressure)), "{backend}: {refused:?}");
        ctx.close_connection(id).unwrap();
        drop(stream);
        rec.wait_closed(id, WAIT);
        assert!(matches!(ctx.try_send_to(id, b"late"), Err(SendError::Closed)));
        event_loop.stop();
    }
}
