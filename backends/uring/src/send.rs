//! Sending: one request in flight per connection, `IORING_OP_SEND` for a request of one
//! buffer (the common case, and cheaper in the kernel: no `msghdr` or iovec array to copy
//! in), `IORING_OP_SENDMSG` for a vectored one, with the per-slot storage it points to; and
//! the refusal of a second request while one is in flight (driver contract, "Broken
//! calls").

use crate::conn::lookup;
use crate::driver::UringDriver;
use crate::user_data::{Kind, UserData};
use io_uring::{opcode, squeue, types};
use ringmill_core::driver::{self, Completion, Flow, Slot};
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// Most iovecs one `sendmsg(2)` takes (`IOV_MAX` on Linux). A longer request is sent up to
/// here and reported as a short send, which the core re-issues from where it stopped.
pub(crate) const MAX_IOVECS: usize = 1024;

/// The `msghdr` and iovec array of a slot's send, kept at a stable address until the
/// send's completion. One per connection, reused for every send of it.
pub(crate) struct SendBuf {
    hdr: libc::msghdr,
    iov: Vec<libc::iovec>,
}

impl SendBuf {
    /// Empty storage.
    pub(crate) fn new() -> Box<Self> {
        Box::new(Self {
            // SAFETY: `msghdr` is plain old data; all zeroes (null pointers, zero
            // lengths) is a valid empty header.
            hdr: unsafe { std::mem::zeroed() },
            iov: Vec::new(),
        })
    }

    /// Returns the send of `bufs` to `fd` with `MSG_NOSIGNAL`: a SEND when there is one
    /// buffer, otherwise a SENDMSG of at most [`MAX_IOVECS`] of them, described in `self`.
    ///
    /// The SQE points into the memory of `bufs` and, for a SENDMSG, into `self`: both must
    /// stay valid and unchanged until the send's completion. A buffer longer than
    /// `u32::MAX` bytes alone is sent up to that length (a short send).
    pub(crate) fn prepare(
        &mut self,
        fd: RawFd,
        bufs: &[IoSlice<'_>],
        user_data: UserData,
    ) -> squeue::Entry {
        debug_assert_eq!(user_data.kind, Kind::Send);
        if let [buf] = bufs {
            let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
            return opcode::Send::new(types::Fd(fd), buf.as_ptr(), len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(user_data.encode());
        }
        self.iov.clear();
        self.iov
            .extend(bufs.iter().take(MAX_IOVECS).map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            }));
        self.hdr.msg_name = std::ptr::null_mut();
        self.hdr.msg_namelen = 0;
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        self.hdr.msg_iovlen = self.iov.len() as _;
        self.hdr.msg_control = std::ptr::null_mut();
        self.hdr.msg_controllen = 0;
        self.hdr.msg_flags = 0;
        opcode::SendMsg::new(types::Fd(fd), &self.hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(user_data.encode())
    }
}

impl UringDriver {
    /// `Driver::send`: one SEND or SENDMSG, or the refusal of a second one in flight.
    ///
    /// # Safety
    ///
    /// As `Driver::send`: the memory `bufs` point to stays valid and unchanged until this
    /// slot's `Sent` or `Closed`.
    pub(crate) unsafe fn start_send(&mut self, slot: Slot, bufs: &[IoSlice<'_>]) {
        let Some(conn) = self.slots.get_mut(slot).filter(|conn| !conn.closing) else {
            log::error!("io_uring: send on slot {slot}, which the driver does not own: ignored");
            return;
        };
        if conn.send_in_flight {
            // Refused: a second request in flight would overwrite the first one's `msghdr`
            // and could reach the socket before the first one's bytes.
            log::error!("io_uring: second send on slot {slot} while one is in flight: refused");
            self.refused_sends.push(slot);
            return;
        }
        let fd = conn.raw_fd();
        let sqe = conn.send.prepare(fd, bufs, UserData::of(slot, Kind::Send));
        conn.send_in_flight = true;
        conn.inflight += 1;
        // SAFETY: a SENDMSG points to the connection's boxed `msghdr` and iovec array,
        // which are not touched again before its completion (one send in flight per slot),
        // and to the bytes of `bufs`, which the caller keeps valid and unchanged until
        // `Sent` or `Closed` (this function's contract); both are reported only after the
        // send's final completion.
        unsafe { self.ring.push(sqe) };
    }

    /// A send completion.
    pub(crate) fn on_send<F>(&mut self, ud: UserData, res: i32, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let Some((slot, conn)) = lookup(&mut self.slots, ud) else {
            log::debug!("io_uring: stale send completion for slot {}", ud.index);
            return false;
        };
        conn.inflight -= 1;
        conn.send_in_flight = false;
        if conn.closing {
            return self.maybe_closed(slot, sink);
        }
        let result = if res >= 0 {
            Ok(res as usize)
        } else {
            Err(io::Error::from_raw_os_error(-res))
        };
        sink(Completion::Sent { slot, result });
        true
    }

    /// Reports the refused sends: a failed `Sent` each, unless the slot is closing or gone.
    pub(crate) fn flush_refused<F>(&mut self, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = false;
        for slot in std::mem::take(&mut self.refused_sends) {
            if self.slots.get(slot).is_some_and(|conn| !conn.closing) {
                sink(Completion::Sent {
                    slot,
                    result: Err(driver::second_send_refused()),
                });
                delivered = true;
            }
        }
        delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_iovecs_and_points_at_them() {
        let data = [7u8; 4];
        let bufs: Vec<IoSlice<'_>> = (0..MAX_IOVECS + 10).map(|_| IoSlice::new(&data)).collect();
        let mut sb = SendBuf::new();
        let sqe = sb.prepare(3, &bufs, UserData::new(1, 2, Kind::Send));
        assert_eq!(opcode_of(&sqe), opcode::SendMsg::CODE);
        assert_eq!(sb.iov.len(), MAX_IOVECS);
        assert_eq!(sb.hdr.msg_iovlen, MAX_IOVECS as _);
        assert_eq!(sb.hdr.msg_iov, sb.iov.as_mut_ptr());
        assert_eq!(sb.iov[0].iov_base as *const u8, data.as_ptr());
        assert_eq!(sb.iov[0].iov_len, 4);
    }

    #[test]
    fn one_buffer_is_a_plain_send() {
        let data = [7u8; 4];
        let mut sb = SendBuf::new();
        let sqe = sb.prepare(3, &[IoSlice::new(&data)], UserData::new(1, 2, Kind::Send));
        assert_eq!(opcode_of(&sqe), opcode::Send::CODE);
        assert!(
            sb.iov.is_empty(),
            "a plain send describes nothing in the storage"
        );
        let two = sb.prepare(
            3,
            &[IoSlice::new(&data), IoSlice::new(&data)],
            UserData::new(1, 2, Kind::Send),
        );
        assert_eq!(opcode_of(&two), opcode::SendMsg::CODE);
    }

    /// The opcode of an SQE, as its `Debug` form shows it.
    fn opcode_of(sqe: &squeue::Entry) -> u8 {
        let text = format!("{sqe:?}");
        let start = text.find("op_code: ").expect("Entry's Debug names op_code") + 9;
        let digits: String = text[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().expect("op_code is a number")
    }
}
