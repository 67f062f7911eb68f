//! Multishot receive state of one connection: arming, pausing and the stash of completions
//! that arrived while paused.

use crate::buf_ring::BGID;
use crate::user_data::UserData;
use io_uring::{opcode, squeue, types};
use std::collections::VecDeque;
use std::os::fd::RawFd;

/// A receive completion kept for later delivery, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stashed {
    /// `len` bytes in ring buffer `bid` (held out of the ring until delivered).
    Data {
        /// Buffer id.
        bid: u16,
        /// Bytes in it.
        len: u32,
    },
    /// Bytes copied out of a ring buffer, which went back to the ring: what arrived for a
    /// paused connection (see [`spill`]).
    Copied(Box<[u8]>),
    /// End of stream.
    Eof,
    /// The receive failed with this errno.
    Err(i32),
}

/// Where a connection's receive stands, as far as the kernel and the stash go.
#[derive(Debug, Default)]
pub(crate) struct RecvState {
    /// Completions go to the sink rather than to the stash: `recv` was called and neither
    /// `pause_recv` nor a `Pause` answer came since.
    pub delivering: bool,
    /// A multishot receive is in the kernel (its final completion has not been reaped).
    pub multishot_armed: bool,
    /// A cancel of the armed receive has been queued.
    pub cancel_queued: bool,
    /// The kernel reported end of stream or an error: the receive is never armed again.
    pub stream_ended: bool,
    /// The last receive ended with `ENOBUFS`; it is armed again once buffers are back.
    pub starved: bool,
    /// Completions not delivered yet, in order (while paused, or behind earlier ones).
    pub stash: VecDeque<Stashed>,
}

impl RecvState {
    /// Whether a new multishot receive should be armed now.
    pub(crate) fn should_arm(&self) -> bool {
        self.delivering && !self.multishot_armed && !self.stream_ended && !self.starved
    }
}

/// Copies every buffer-backed item of `stash` out of the ring and gives the buffer back:
/// a paused connection must not hold receive buffers, or a few of them could leave the
/// ring empty for every other connection of the loop. Memory per paused connection is
/// bounded by what the kernel delivered before the pause's cancel landed.
pub(crate) fn spill(stash: &mut VecDeque<Stashed>, bufs: &mut crate::buf_ring::BufRing) {
    for item in stash.iter_mut() {
        if let Stashed::Data { bid, len } = *item {
            *item = Stashed::Copied(bufs.slice(bid, len as usize).into());
            bufs.recycle(bid);
        }
    }
}

/// A multishot receive on `fd` that picks buffers from the provided buffer ring.
pub(crate) fn recv_sqe(fd: RawFd, user_data: UserData) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(fd), BGID)
        .build()
        .user_data(user_data.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arming_rules() {
        let mut r = RecvState::default();
        assert!(!r.should_arm(), "nothing before recv()");
        r.delivering = true;
        assert!(r.should_arm());
        r.multishot_armed = true;
        assert!(!r.should_arm(), "one receive at a time");
        r.multishot_armed = false;
        r.starved = true;
        assert!(!r.should_arm(), "waits for buffers");
        r.starved = false;
        r.stream_ended = true;
        assert!(!r.should_arm(), "never after EOF");
    }
}
