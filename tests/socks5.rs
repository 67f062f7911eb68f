//! SOCKS5 client layer against a real SOCKS5 server (Debian's `microsocks`, started on a
//! free loopback port by the test; `ci/layer-tools.sh` installs it), on every backend:
//! CONNECT to an IPv4 address, an IPv6 address and a host name; no authentication and
//! username/password (right, wrong, missing); the proxy's error reply for a refused
//! target; the connect timeout covering the handshake; a framing layer stacked on top.

mod common;
mod layer_support;

use common::*;
use layer_support::*;
use ringmill::layer::{LineDelimited, Socks5, Socks5Error};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// A client through `proxy` with `layer`, recording into `rec`; `hello` is sent before
/// the start (held until the proxy has connected).
fn start_client(
    event_loop: &EventLoop,
    proxy: SocketAddr,
    layer: Socks5,
    rec: &Arc<Recorder>,
    hello: &[u8],
) -> TcpClient<Recording> {
    let mut client = layered_client(proxy, TcpClientConfig::default(), rec, layer);
    client.send(hello).expect("send before start");
    client.start(event_loop).expect("start");
    client
}

/// Runs one echo exchange through `layer` and checks it end to end: on_connect only
/// after the proxy connected, the held frame and a later one echoed, one connection
/// each side, clean close.
fn echo_through(event_loop: &EventLoop, proxy: SocketAddr, layer: Socks5, srec: &Arc<Recorder>) {
    let target = layer.target().to_string();
    let served_before = srec.connects();
    let crec = Recorder::shared();
    let client = start_client(event_loop, proxy, layer, &crec, b"held ");
    let id = crec.wait_conn(0, WAIT);
    client.send(b"and after").unwrap();
    crec.wait_bytes(id, 14, WAIT);
    assert_eq!(crec.received(id), b"held and after", "via {target}");
    assert_eq!(crec.trace(id).events[0], Ev::Connect);
    srec.wait_connects(served_before + 1, WAIT);
    client.disconnect().unwrap();
    crec.wait_closed(id, WAIT);
    crec.assert_all_closed_once();
    assert!(
        crec.errors().is_empty(),
        "via {target}: {:?}",
        crec.errors()
    );
}

/// A client through `proxy` with `layer` that must fail to connect with an error of
/// `kind` (`Connect(..)`), never reaching `on_connect`. Returns the error's message.
fn connect_fails(event_loop: &EventLoop, proxy: SocketAddr, layer: Socks5, kind: &str) -> String {
    let crec = Recorder::shared();
    let client = start_client(event_loop, proxy, layer, &crec, b"never");
    let e = crec.wait_error("Connect(", WAIT);
    assert_eq!(e.kind, kind, "{e:?}");
    assert_eq!(e.conn, Some(client.id()));
    poll_until(WAIT, "the failed client refusing sends", || {
        matches!(client.send(b"x"), Err(SendError::Closed))
    });
    assert_eq!(crec.connects(), 0);
    assert_eq!(crec.disconnects(), 0);
    e.message
}

/// No authentication: CONNECT to 127.0.0.1, to ::1 and to "localhost".
fn connect_to_ipv4_ipv6_and_a_host_name(backend: Backend, peer: Socks5Peer) {
    let Some(proxy) = peer.start(None) else {
        return;
    };
    let event_loop = event_loop(backend);
    let srec = Recorder::shared();
    let server = start_server(&event_loop, server_config().build(), Recording::echo(&srec));
    let v4 = addr_of(&server);
    echo_through(&event_loop, proxy.addr(), Socks5::to_addr(v4), &srec);

    // "localhost" may resolve to ::1 first: listen there too, on the same port, when
    // the machine has IPv6 loopback.
    let v6_server = TcpServer::new(
        TcpServerConfig::builder()
            .address(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)))
            .build(),
        Recording::echo(&srec),
    );
    match v6_server {
        Ok(v6_server) => {
            v6_server.start(&event_loop).unwrap();
            let v6 = addr_of(&v6_server);
            echo_through(&event_loop, proxy.addr(), Socks5::to_addr(v6), &srec);
        }
        Err(e) => println!("skipped: IPv6 target: cannot listen on [::1]: {e}"),
    }

    let same_port = TcpServer::new(
        TcpServerConfig::builder()
            .address(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v4.port())))
            .build(),
        Recording::echo(&srec),
    );
    if let Ok(same_port) = &same_port {
        same_port.start(&event_loop).unwrap();
    }
    echo_through(
        &event_loop,
        proxy.addr(),
        Socks5::to_host("localhost", v4.port()),
        &srec,
    );
    srec.assert_no_violations();
    settle(event_loop);
}

/// Username/password: the right ones connect; a wrong password and no credentials
/// at all are connect errors naming why.
fn username_password_authentication(backend: Backend, peer: Socks5Peer) {
    let Some(proxy) = peer.start(Some(("ringmill", "s3cret"))) else {
        return;
    };
    let event_loop = event_loop(backend);
    let srec = Recorder::shared();
    let server = start_server(&event_loop, server_config().build(), Recording::echo(&srec));
    let target = addr_of(&server);

    echo_through(
        &event_loop,
        proxy.addr(),
        Socks5::to_addr(target).with_credentials("ringmill", "s3cret"),
        &srec,
    );
    let wrong = connect_fails(
        &event_loop,
        proxy.addr(),
        Socks5::to_addr(target).with_credentials("ringmill", "wrong"),
        "Connect(PermissionDenied)",
    );
    assert_eq!(
        wrong,
        format!("connect failed: {}", Socks5Error::AuthenticationFailed)
    );
    let none = connect_fails(
        &event_loop,
        proxy.addr(),
        Socks5::to_addr(target),
        "Connect(PermissionDenied)",
    );
    assert_eq!(
        none,
        format!("connect failed: {}", Socks5Error::NoAcceptableMethod)
    );
    assert_eq!(
        srec.connects(),
        1,
        "only the authenticated client got through"
    );
    settle(event_loop);
}

/// The proxy cannot reach the target (nothing listens there): its error reply is a
/// connect error of kind `ConnectionRefused`.
fn refused_target_is_a_connect_error(backend: Backend, peer: Socks5Peer) {
    let Some(proxy) = peer.start(None) else {
        return;
    };
    let event_loop = event_loop(backend);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let message = connect_fails(
        &event_loop,
        proxy.addr(),
        Socks5::to_addr(closed),
        "Connect(ConnectionRefused)",
    );
    assert_eq!(
        message,
        format!("connect failed: {}", Socks5Error::Reply(5))
    );
    settle(event_loop);
}

/// Layers stack: SOCKS5 at the bottom, lines on top, to a line server through
/// microsocks; each side gets whole lines.
fn line_framing_over_socks(backend: Backend, peer: Socks5Peer) {
    let Some(proxy) = peer.start(None) else {
        return;
    };
    let event_loop = event_loop(backend);
    let srec = Recorder::shared();
    let server = TcpServer::new(server_config().build(), Recording::echo(&srec))
        .unwrap()
        .with_layer(|| Box::new(LineDelimited::new(1024)));
    server.start(&event_loop).unwrap();
    let crec = Recorder::shared();
    let mut client = TcpClient::connect(
        proxy.addr(),
        TcpClientConfig::default(),
        Recording::new(&crec),
    )
    .unwrap()
    .with_layer(Socks5::to_addr(addr_of(&server)))
    .unwrap()
    .with_layer(LineDelimited::new(1024))
    .unwrap();
    client.send(b"first line").unwrap();
    client.start(&event_loop).unwrap();
    let id = crec.wait_conn(0, WAIT);
    client.send(b"second").unwrap();
    crec.wait_bytes(id, 16, WAIT);
    let sizes: Vec<Ev> = crec
        .trace(id)
        .events
        .into_iter()
        .filter(|e| matches!(e, Ev::Data(_)))
        .collect();
    assert_eq!(sizes, [Ev::Data(10), Ev::Data(6)]);
    assert_eq!(crec.received(id), b"first linesecond");
    client.disconnect().unwrap();
    crec.wait_closed(id, WAIT);
    crec.assert_all_closed_once();
    settle(event_loop);
}

backend_matrix! {
    fn connect_to_ipv4_ipv6_and_a_host_name(backend: Backend) {
        connect_to_ipv4_ipv6_and_a_host_name(backend, Socks5Peer::InProcess);
    }

    fn connect_to_ipv4_ipv6_and_a_host_name_via_microsocks(backend: Backend) {
        connect_to_ipv4_ipv6_and_a_host_name(backend, Socks5Peer::Microsocks);
    }

    fn username_password_authentication(backend: Backend) {
        username_password_authentication(backend, Socks5Peer::InProcess);
    }

    fn username_password_authentication_via_microsocks(backend: Backend) {
        username_password_authentication(backend, Socks5Peer::Microsocks);
    }

    fn refused_target_is_a_connect_error(backend: Backend) {
        refused_target_is_a_connect_error(backend, Socks5Peer::InProcess);
    }

    fn refused_target_is_a_connect_error_via_microsocks(backend: Backend) {
        refused_target_is_a_connect_error(backend, Socks5Peer::Microsocks);
    }

    fn line_framing_over_socks(backend: Backend) {
        line_framing_over_socks(backend, Socks5Peer::InProcess);
    }

    fn line_framing_over_socks_via_microsocks(backend: Backend) {
        line_framing_over_socks(backend, Socks5Peer::Microsocks);
    }

    /// The connect timeout covers the SOCKS5 handshake: a "proxy" that takes the
    /// greeting and never answers gives `Connect(TimedOut)`.
    fn connect_timeout_covers_the_socks_handshake(backend: Backend) {
        let event_loop = event_loop(backend);
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let crec = Recorder::shared();
        let config = TcpClientConfig {
            connect_timeout: Duration::from_millis(300),
            ..TcpClientConfig::default()
        };
        let mut client = TcpClient::connect(silent.local_addr().unwrap(), config, Recording::new(&crec))
            .unwrap()
            .with_layer(Socks5::to_host("example.invalid", 80))
            .unwrap();
        client.start(&event_loop).unwrap();
        let (mut peer, _) = silent.accept().unwrap();
        peer.set_read_timeout(Some(WAIT)).unwrap();
        let mut greeting = [0u8; 3];
        peer.read_exact(&mut greeting).unwrap();
        assert_eq!(greeting, [5, 1, 0], "SOCKS5, one method: no authentication");
        let e = crec.wait_error("Connect(TimedOut)", WAIT);
        assert_eq!(e.conn, Some(client.id()));
        assert_eq!(crec.connects(), 0);
        assert_eq!(crec.disconnects(), 0);
        settle(event_loop);
    }
}
