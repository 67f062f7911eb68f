//! Socket setup: listeners (one per loop with `SO_REUSEPORT` where the OS has it) and
//! unconnected client sockets. Options on accepted sockets are applied by the core.

use ringmill_core::config::TcpClientConfig;
use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};

/// Whether several listeners can share one port, so each loop can own one.
pub(crate) const SHARED_PORT: bool = cfg!(all(
    unix,
    not(any(
        target_os = "solaris",
        target_os = "illumos",
        target_os = "cygwin"
    ))
));

/// Binds one non-blocking listener on `addr`, ready to share its port with the loops'
/// other listeners where the OS allows it; an IPv6 one accepts IPv6 only if `only_v6`.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    backlog: u32,
    only_v6: bool,
) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    #[cfg(all(
        unix,
        not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
    ))]
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A non-blocking, unconnected socket for a client, with the client's options applied.
pub(crate) fn client_socket(addr: SocketAddr, config: &TcpClientConfig) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(config.nodelay)?;
    if let Some(idle) = config.keep_alive {
        let idle = idle.min(ringmill_core::config::MAX_KEEP_ALIVE);
        socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    socket.set_nosigpipe(true)?;
    Ok(socket)
}

/// A connected `stream` made ready for a client: non-blocking, with the client's options.
pub(crate) fn adopt_client_stream(
    stream: std::net::TcpStream,
    config: &TcpClientConfig,
) -> io::Result<Socket> {
    let socket = Socket::from(stream);
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(config.nodelay)?;
    if let Some(idle) = config.keep_alive {
        socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    socket.set_nosigpipe(true)?;
    Ok(socket)
}
