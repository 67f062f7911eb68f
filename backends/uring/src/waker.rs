//! Cross-thread wake-ups: an eventfd whose read is armed in the ring.

use crate::user_data::{Kind, UserData};
use io_uring::{opcode, squeue, types};
use ringmill_core::driver::Waker;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

/// The [`Waker`] handed to other threads: writes to the loop's eventfd.
#[derive(Debug)]
pub(crate) struct EventFdWaker {
    fd: OwnedFd,
}

impl Waker for EventFdWaker {
    fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        loop {
            // SAFETY: writes 8 bytes from a live `u64` to an eventfd this handle owns.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The counter is saturated: a wake-up is pending already.
                Some(libc::EAGAIN) => return Ok(()),
                _ => return Err(e),
            }
        }
    }
}

/// The loop's side: the eventfd and the 8-byte buffer its armed read fills.
pub(crate) struct WakeReader {
    waker: Arc<EventFdWaker>,
    /// Target of the armed read; boxed so its address is stable while the kernel holds it.
    buf: Box<u64>,
}

impl WakeReader {
    /// A blocking eventfd (the ring's read waits on it by polling; a non-blocking one could
    /// make the read fail with `EAGAIN` on some kernels).
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by `eventfd` and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            waker: Arc::new(EventFdWaker { fd }),
            buf: Box::new(0),
        })
    }

    /// A handle for other threads.
    pub(crate) fn waker(&self) -> Arc<EventFdWaker> {
        self.waker.clone()
    }

    /// The read to arm. The caller must keep `self` alive until its completion.
    pub(crate) fn read_sqe(&mut self) -> squeue::Entry {
        let buf: *mut u64 = &mut *self.buf;
        opcode::Read::new(
            types::Fd(self.waker.fd.as_raw_fd()),
            buf.cast(),
            std::mem::size_of::<u64>() as u32,
        )
        .build()
        .user_data(UserData::new(0, 0, Kind::Wake).encode())
    }
}
