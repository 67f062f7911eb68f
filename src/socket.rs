//! Socket setup: listeners and unconnected client sockets. Options on accepted sockets are
//! applied by the core.
//!
//! A server binds one listener, without `SO_REUSEPORT`, so its address is its own: a second
//! server, another process, or a std listener binding it gets `AddrInUse`, as with std and
//! mill-net. Every loop accepts from that one socket (a duplicate of its descriptor each).
//! With `reuse_port(true)` the server opts into `SO_REUSEPORT` instead: one listener per
//! loop, and other sockets of the same user that set it too may share the port.

use ringmill_core::config::TcpClientConfig;
use ringmill_core::error::{ConfigError, NetworkError};
use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};

/// Whether several listeners can share one port through `SO_REUSEPORT`.
pub(crate) const SHARED_PORT: bool = cfg!(all(
    unix,
    not(any(
        target_os = "solaris",
        target_os = "illumos",
        target_os = "cygwin"
    ))
));

/// Binds one non-blocking listener on `addr`. With `reuse_port` (where the OS has it) the
/// port may be shared with other sockets that set `SO_REUSEPORT` too; without it, nobody
/// else can bind the address while the listener lives. An IPv6 listener accepts IPv6
/// only if `only_v6`.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    backlog: u32,
    only_v6: bool,
    reuse_port: bool,
) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // On Unix this only lets a restarted server bind over connections in TIME_WAIT (as
    // std does); it never lets two listeners share an address.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    #[cfg(all(
        unix,
        not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
    ))]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(all(
        unix,
        not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
    )))]
    let _ = reuse_port;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A non-blocking, unconnected socket for a client, with the client's options applied,
/// and the options the system refused (reported to the handler once the client starts).
pub(crate) fn client_socket(
    addr: SocketAddr,
    config: &TcpClientConfig,
) -> io::Result<(Socket, Vec<NetworkError>)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    prepare_client(socket, config)
}

/// A connected `stream` made ready for a client: non-blocking, with the client's options
/// (and those the system refused, as in [`client_socket`]).
pub(crate) fn adopt_client_stream(
    stream: std::net::TcpStream,
    config: &TcpClientConfig,
) -> io::Result<(Socket, Vec<NetworkError>)> {
    prepare_client(Socket::from(stream), config)
}

/// Makes a client's socket non-blocking and applies the client's options.
fn prepare_client(
    socket: Socket,
    config: &TcpClientConfig,
) -> io::Result<(Socket, Vec<NetworkError>)> {
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(config.nodelay)?;
    let refused = keep_alive(&socket, config);
    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    socket.set_nosigpipe(true)?;
    Ok((socket, refused))
}

/// Sets the client's keep-alive; a value the system refuses (Linux: above 32,767 s) is
/// returned as an error for the connection, which goes on without it, as mill-net's does.
fn keep_alive(socket: &Socket, config: &TcpClientConfig) -> Vec<NetworkError> {
    let Some(idle) = config.keep_alive else {
        return Vec::new();
    };
    match socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle)) {
        Ok(()) => Vec::new(),
        Err(e) => vec![NetworkError::Configuration(ConfigError::Rejected {
            option: "SO_KEEPALIVE",
            reason: format!("the system refused it on the client's socket: {e}"),
        })],
    }
}
