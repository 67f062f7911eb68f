//! Helpers shared by the reliability suite (`tests/reliability_*.rs`), on top of
//! `tests/common`: process memory, more descriptors, clients bound to chosen
//! loopback source addresses, and child-process plumbing.
#![allow(dead_code)]

use crate::common::{raise_nofile_limit, Backend, WAIT};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpStream};

/// Resident set size of this process, in KiB (from `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Raises `RLIMIT_NOFILE` (soft, and hard too when the process may) to at least `want`;
/// returns the soft limit in force afterwards. Panics if it stays below `need`.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn ensure_nofile(want: u64, need: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if (lim.rlim_max as u64) < want && lim.rlim_max != libc::RLIM_INFINITY {
        let raised = libc::rlimit {
            rlim_cur: want as libc::rlim_t,
            rlim_max: want as libc::rlim_t,
        };
        // SAFETY: a valid rlimit; raising the hard limit only succeeds with the right
        // privilege, and failing leaves the limits unchanged.
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    }
    let got = raise_nofile_limit(want);
    assert!(
        got >= need,
        "this test needs {need} descriptors, RLIMIT_NOFILE allows {got}"
    );
    got
}

/// A blocking client connected to `addr` from the loopback address `src` (port chosen by
/// the kernel), with read/write timeouts of [`WAIT`] and `TCP_NODELAY`.
pub fn connect_from(src: [u8; 4], addr: SocketAddr) -> TcpStream {
    try_connect_from(src, addr).unwrap_or_else(|e| panic!("connect {addr} from {src:?}: {e}"))
}

/// Like [`connect_from`], returning the error.
pub fn try_connect_from(src: [u8; 4], addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    // Lets many clients share a source address: the port is picked at connect, for the
    // whole 4-tuple.
    socket.set_reuse_address(true)?;
    bind_no_port(&socket);
    socket.bind(&SockAddr::from(SocketAddr::from((src, 0))))?;
    socket.connect_timeout(&SockAddr::from(addr), WAIT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `IP_BIND_ADDRESS_NO_PORT`: defer the port choice of a bound socket to `connect`.
fn bind_no_port(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a valid int option of the right size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The full name of the generated test `name::<backend>`, for re-running it in a child.
pub fn test_name(name: &str, backend: Backend) -> String {
    let suffix = match backend {
        Backend::Uring => "uring",
        Backend::Mio => "mio",
        Backend::Auto => unreachable!("the matrix never runs Auto"),
    };
    format!("{name}::{suffix}")
}

/// Per-connection byte counts, for checking that what came back is a prefix of (or all
/// of) what was sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Bytes written by the client.
    pub sent: usize,
    /// Bytes read back by the client, all verified.
    pub echoed: usize,
}

/// Runs the heavy tests of one test binary one at a time (the `uring` and `mio` arms of a
/// scenario would otherwise load the 2 cores together): hold the guard for the test.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}
