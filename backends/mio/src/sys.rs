//! The few syscalls mio does not wrap the way this driver needs them: a vectored send
//! that never raises `SIGPIPE`, and the per-socket setup that makes that possible where
//! the send itself cannot ask for it.
//!
//! | platform | how a vanished peer is kept from raising `SIGPIPE` |
//! |---|---|
//! | Apple (macOS, iOS, ...) | `SO_NOSIGPIPE` set on every socket at registration; `send` / `sendmsg` |
//! | other Unix (Linux, Android, the BSDs, illumos, ...) | `send` / `sendmsg(..., MSG_NOSIGNAL)` |
//! | Windows | there is no `SIGPIPE`; `WSASend` through `write_vectored` |
//!
//! Every call retries `EINTR` itself.

use mio::net::TcpStream;
use std::io::{self, IoSlice};

/// The readiness mechanism mio uses on this platform, for [`describe`](crate::MioDriver).
pub(crate) const SELECTOR: &str = if cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "illumos",
    target_os = "redox"
)) {
    "epoll"
} else if cfg!(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)) {
    "kqueue"
} else if cfg!(windows) {
    "IOCP/AFD"
} else {
    "poll"
};

/// Whether a read that returned less than it asked for shows that the socket's receive
/// queue is drained, so the connection can wait for its next readable edge instead of
/// reading again only to see `WouldBlock`.
///
/// True for epoll and kqueue: both raise a new edge for every segment that arrives after
/// the read, so no data can be left behind unannounced. False for the level-triggered
/// emulations (Windows, and mio's `poll(2)` fallback), where only `WouldBlock` re-arms.
/// A connection whose peer has closed its side keeps reading until end of stream either
/// way: the hang-up came as an edge already and no other will follow.
pub(crate) const SHORT_READ_DRAINS: bool = cfg!(all(
    not(mio_unsupported_force_poll_poll),
    any(
        target_os = "linux",
        target_os = "android",
        target_os = "illumos",
        target_os = "redox",
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    )
));

/// Most buffers handed to the kernel in one vectored send (`IOV_MAX` is at least 1024 on
/// every platform this driver runs on; the rest of a longer request goes in the next call).
pub(crate) const MAX_IOV: usize = 64;

/// Prepares a stream for [`send_vectored`]: sets `SO_NOSIGPIPE` where the send call cannot
/// suppress `SIGPIPE` itself; does nothing elsewhere.
#[cfg(target_vendor = "apple")]
pub(crate) fn prepare(stream: &TcpStream) -> io::Result<()> {
    socket2::SockRef::from(stream).set_nosigpipe(true)
}

/// Prepares a stream for [`send_vectored`]: sets `SO_NOSIGPIPE` where the send call cannot
/// suppress `SIGPIPE` itself; does nothing elsewhere.
#[cfg(not(target_vendor = "apple"))]
pub(crate) fn prepare(_stream: &TcpStream) -> io::Result<()> {
    Ok(())
}

/// Flags of every send: `MSG_NOSIGNAL` where the call can refuse `SIGPIPE` itself; none on
/// Apple, where [`prepare`] set `SO_NOSIGPIPE` on the socket instead.
#[cfg(all(unix, not(target_vendor = "apple")))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(all(unix, target_vendor = "apple"))]
const SEND_FLAGS: libc::c_int = 0;

/// Writes as much of `bufs` (at most [`MAX_IOV`] of them are used) as the socket takes
/// without blocking, with [`SEND_FLAGS`], through the core's
/// [`send_some`](ringmill_core::sock::send_some) (`send` for one buffer, `sendmsg` for more).
#[cfg(unix)]
pub(crate) fn send_vectored(stream: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let bufs = &bufs[..bufs.len().min(MAX_IOV)];
    ringmill_core::sock::send_some(&socket2::SockRef::from(stream), bufs, SEND_FLAGS)
}

/// Writes as much of `bufs` (at most [`MAX_IOV`] of them are used) as the socket takes
/// without blocking, in one vectored write (there is no `SIGPIPE` here).
#[cfg(not(unix))]
pub(crate) fn send_vectored(stream: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    use std::io::Write;

    let bufs = &bufs[..bufs.len().min(MAX_IOV)];
    let mut stream = stream;
    loop {
        match stream.write_vectored(bufs) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// Whether a non-blocking `connect` error only means "in progress".
pub(crate) fn connect_in_progress(err: &io::Error) -> bool {
    #[cfg(unix)]
    if err.raw_os_error() == Some(libc::EINPROGRESS) {
        return true;
    }
    // A non-blocking connect interrupted by a signal goes on asynchronously (POSIX), like
    // one that is in progress.
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
