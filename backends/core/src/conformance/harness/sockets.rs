//! Sockets for the tests: listeners handed to the driver, connected pairs made without it.

use crate::driver::{Driver, ListenerId};
use std::net::{SocketAddr, TcpListener, TcpStream};

/// A non-blocking listener on a free loopback port, handed to `driver` as `id`.
pub fn listen<D: Driver>(driver: &mut D, id: ListenerId) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback listener");
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    driver.listen(id, listener).expect("listen");
    addr
}

/// A connected pair made without the driver: (the peer, the non-blocking server side).
/// Other connections waiting on the (blocking) `listener` are dropped.
pub fn socket_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let me = peer.local_addr().unwrap();
    loop {
        let (server, from) = listener.accept().unwrap();
        if from == me {
            server.set_nonblocking(true).unwrap();
            return (peer, server);
        }
    }
}

/// A fresh, non-blocking, unconnected TCP socket for `addr`'s family.
pub fn tcp_socket(addr: SocketAddr) -> socket2::Socket {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    socket.set_nonblocking(true).unwrap();
    socket
}
