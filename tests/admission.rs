//! Admission control at accept: per-IP connection cap, accept rate (global and per IP),
//! and exemptions, with clients on several 127.0.0.x source addresses.

mod common;

use common::*;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A client connected to `addr` from `src` (a loopback address).
fn connect_from(src: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket
        .bind(&SockAddr::from(SocketAddr::from((src, 0))))
        .unwrap_or_else(|e| panic!("bind {src:?}: {e}"));
    socket
        .connect_timeout(&SockAddr::from(addr), WAIT)
        .unwrap_or_else(|e| panic!("connect from {src:?}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// Whether the server kept this connection: it echoes one byte, or closes it.
fn is_served(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"?").is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(1) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
        Err(e) => panic!("neither echo nor close within {WAIT:?}: {e}"),
    }
}

fn refusals(rec: &Recorder, reason: &str) -> usize {
    rec.errors()
        .iter()
        .filter(|e| {
            e.conn.is_none() && e.kind.contains("AdmissionRefused") && e.kind.contains(reason)
        })
        .count()
}

backend_matrix! {
    /// `max_connections_per_ip(3)`: a fourth and fifth connection from one address are
    /// closed at once and reported; another address is unaffected; closing one frees a
    /// place for that address.
    fn per_ip_cap_refuses_extra_connections_from_one_address(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let config = server_config().max_connections_per_ip(3).build();
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let addr = addr_of(&server);

        let mut from_2: Vec<TcpStream> = (0..5).map(|_| connect_from([127, 0, 0, 2], addr)).collect();
        let mut from_3: Vec<TcpStream> = (0..3).map(|_| connect_from([127, 0, 0, 3], addr)).collect();
        rec.wait(WAIT, "2 per-IP refusals", |r| {
            r.errors.iter().filter(|e| e.kind.contains("PerIpLimit")).count() >= 2
        });
        rec.wait_connects(6, WAIT);
        let served_2: Vec<bool> = from_2.iter_mut().map(is_served).collect();
        assert_eq!(served_2.iter().filter(|s| **s).count(), 3, "127.0.0.2: {served_2:?}");
        assert!(from_3.iter_mut().all(is_served), "127.0.0.3 must be served in full");
        assert_eq!(refusals(&rec, "PerIpLimit"), 2);
        let m = server.metrics();
        assert_eq!((m.accepted, m.refused_per_ip), (6, 2), "{m:?}");

        // Close one served connection from 127.0.0.2: its place comes back. The place is
        // given back just after `on_disconnect` returns, so a connect racing that may still
        // be refused: retry (each refusal is counted) until one is served.
        let index = served_2.iter().position(|s| *s).unwrap();
        drop(from_2.remove(index));
        rec.wait_disconnects(1, WAIT);
        let mut raced = 0;
        let mut again = connect_from([127, 0, 0, 2], addr);
        while !is_served(&mut again) {
            raced += 1;
            assert!(raced < 100, "a freed per-IP place must admit a new connection");
            again = connect_from([127, 0, 0, 2], addr);
        }
        rec.wait(WAIT, "every refusal reported", |r| {
            r.errors.iter().filter(|e| e.kind.contains("PerIpLimit")).count() == 2 + raced
        });
        assert_eq!(server.metrics().refused_per_ip, 2 + raced as u64);
    }

    /// `exempt_loopback(true)` lifts the per-IP cap for loopback peers.
    fn exempt_loopback_lifts_the_per_ip_cap(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let config = server_config()
            .max_connections_per_ip(1)
            .exempt_loopback(true)
            .build();
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let addr = addr_of(&server);
        let mut clients: Vec<TcpStream> = (0..4).map(|_| connect_from([127, 0, 0, 7], addr)).collect();
        assert!(clients.iter_mut().all(is_served));
        assert_eq!(server.metrics().refused_per_ip, 0);
    }

    /// `accept_rate(_, 4)` with a negligible refill: a burst of 10 connections gets 4 in.
    fn accept_rate_caps_a_burst(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let config = server_config().accept_rate(0.001, 4).build();
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let addr = addr_of(&server);
        let mut clients: Vec<TcpStream> = (0..10)
            .map(|i| connect_from([127, 0, 0, 10 + i], addr))
            .collect();
        rec.wait(WAIT, "6 rate refusals", |r| {
            r.errors.iter().filter(|e| e.kind.contains("RateLimited")).count() >= 6
        });
        let served = clients.iter_mut().map(is_served).filter(|s| *s).count();
        assert_eq!(served, 4);
        let m = server.metrics();
        assert_eq!((m.accepted, m.refused_rate), (4, 6), "{m:?}");
    }

    /// `accept_rate_per_ip(_, 2)`: the third connection from one address is refused,
    /// other addresses keep their own budget, exempt addresses have none.
    fn per_ip_rate_is_counted_per_address(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let config = server_config()
            .accept_rate_per_ip(0.001, 2)
            .admission_exempt("127.0.0.30".parse().unwrap())
            .build();
        let server = start_server(&event_loop, config, Recording::echo(&rec));
        let addr = addr_of(&server);
        let mut a: Vec<TcpStream> = (0..3).map(|_| connect_from([127, 0, 0, 28], addr)).collect();
        let mut b: Vec<TcpStream> = (0..2).map(|_| connect_from([127, 0, 0, 29], addr)).collect();
        let mut c: Vec<TcpStream> = (0..5).map(|_| connect_from([127, 0, 0, 30], addr)).collect();
        rec.wait(WAIT, "1 per-IP rate refusal", |r| {
            r.errors.iter().filter(|e| e.kind.contains("PerIpRateLimited")).count() >= 1
        });
        assert_eq!(a.iter_mut().map(is_served).filter(|s| *s).count(), 2);
        assert!(b.iter_mut().all(is_served));
        assert!(c.iter_mut().all(is_served), "an exempt address has no per-IP rate");
        assert_eq!(server.metrics().refused_ip_rate, 1);
    }
}

#[test]
fn nonsensical_admission_rules_are_rejected() {
    use ringmill::errors::ConfigError;
    use ringmill::tcp::TcpServerConfig;
    assert_eq!(
        TcpServerConfig::builder()
            .max_connections_per_ip(0)
            .try_build()
            .unwrap_err(),
        ConfigError::Zero("max_connections_per_ip")
    );
    assert!(matches!(
        TcpServerConfig::builder().accept_rate(0.0, 10).try_build(),
        Err(ConfigError::OutOfRange {
            option: "accept_rate",
            ..
        })
    ));
    assert!(matches!(
        TcpServerConfig::builder()
            .accept_rate_per_ip(5.0, 0)
            .try_build(),
        Err(ConfigError::OutOfRange {
            option: "accept_rate_per_ip",
            ..
        })
    ));
}
