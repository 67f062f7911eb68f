//! The one socket call both drivers make outside their readiness or completion mechanism:
//! a send straight to the socket (the mio driver's sends, io_uring's write-through).

use socket2::SockRef;
use std::io::{self, IoSlice};
use std::os::raw::c_int;

/// Writes as much of `bufs` as the socket takes, in one call with `flags`, retrying
/// `EINTR`: `send` for one buffer (the kernel then has no `msghdr` or iovec array to copy
/// in), vectored `sendmsg` for more. A socket that takes nothing returns its error
/// (`WouldBlock` for a full non-blocking one); the caller caps the number of buffers.
#[inline]
pub fn send_some(socket: &SockRef<'_>, bufs: &[IoSlice<'_>], flags: c_int) -> io::Result<usize> {
    loop {
        let sent = match bufs {
            [one] => socket.send_with_flags(one, flags),
            _ => socket.send_vectored_with_flags(bufs, flags),
        };
        match sent {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}
