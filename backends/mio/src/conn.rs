//! Per-slot state: one connection's socket, the readiness seen on it, and the buffers of
//! its send. The slot table itself is the core's [`SlotTable`](ringmill_core::slots::SlotTable).
//!
//! mio is edge-triggered: an event says readiness *changed*, not that it holds. So each
//! connection remembers whether it is still readable (an event was seen and reading has
//! not yet hit `WouldBlock`, or, where [`sys::SHORT_READ_DRAINS`] holds, a read short of
//! its buffer) and whether a send is waiting for the next writable event. Everything else
//! about the connection (whether the application receives, what is queued, whether it is
//! closing) is the core's.

use crate::sys;
use mio::net::TcpStream;
use ringmill_core::driver::{Completion, Flow, Slot, WriteNow};
use std::io::{self, IoSlice, Read};

/// One buffer of a send request: a pointer and a length into memory the core owns.
pub(crate) struct RawBuf {
    ptr: *const u8,
    len: usize,
}

impl RawBuf {
    /// Remembers where `buf` points.
    ///
    /// # Safety
    ///
    /// The memory `buf` describes must stay valid and unchanged for as long as the returned
    /// value exists.
    pub(crate) unsafe fn new(buf: &IoSlice<'_>) -> Self {
        Self {
            ptr: buf.as_ptr(),
            len: buf.len(),
        }
    }

    /// The bytes, from `offset` on.
    fn bytes_from(&self, offset: usize) -> &[u8] {
        // SAFETY: `RawBuf::new`'s caller promised that the memory stays valid and unchanged
        // while `self` exists, and the returned borrow cannot outlive `self`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        &bytes[offset..]
    }
}

// SAFETY: a `RawBuf` is a read-only view of memory whose validity `RawBuf::new`'s caller
// guarantees for the view's whole life, on whichever thread it ends up; it is never shared
// between threads (it is not `Sync`), and the memory is only read.
unsafe impl Send for RawBuf {}

/// One connection.
pub(crate) struct Conn {
    /// The socket, registered with the loop's `Poll`.
    pub(crate) stream: TcpStream,
    /// A readable event was seen and reading has not yet hit `WouldBlock` (or a short
    /// read, see [`sys::SHORT_READ_DRAINS`]).
    pub(crate) readable: bool,
    /// An event said the peer closed its side (or the socket has an error): read on until
    /// end of stream or the error, whatever the size of each read.
    pub(crate) read_closed: bool,
    /// The driver reads this socket when it is readable: `recv` was called and neither
    /// `pause_recv` nor a `Pause` answer came since.
    pub(crate) reading: bool,
    /// A read returned end of stream or failed: the socket is not read again.
    pub(crate) read_ended: bool,
    /// A read is queued for the next poll (its budget ran out while still readable).
    pub(crate) read_queued: bool,
    /// The non-blocking `connect(2)` is still in progress (not reported yet).
    pub(crate) connect_in_progress: bool,
    /// The buffers of the send waiting for a writable event: held from `send` until its
    /// outcome is decided, then cleared. Kept between sends and, through the driver's
    /// spare list, between connections, so the steady state does not allocate.
    pub(crate) send: Vec<RawBuf>,
    /// Where the send the core asked for stands; the driver refuses a second one until
    /// the first one's `Sent` is delivered.
    pub(crate) send_stage: SendStage,
}

/// Where a connection's send stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendStage {
    /// No send, or its `Sent` was delivered.
    Idle,
    /// The buffers are held in [`Conn::send`] until the socket is writable.
    Waiting,
    /// Its outcome is queued for the next poll (a `Ready::Sent`).
    Decided,
}

impl Conn {
    /// A connection around a registered stream, reusing `send` storage.
    pub(crate) fn new(stream: TcpStream, connecting: bool, mut send: Vec<RawBuf>) -> Self {
        send.clear();
        Self {
            stream,
            readable: false,
            read_closed: false,
            reading: false,
            read_ended: false,
            read_queued: false,
            connect_in_progress: connecting,
            send,
            send_stage: SendStage::Idle,
        }
    }

    /// Whether reading should go on now.
    pub(crate) fn wants_read(&self) -> bool {
        self.readable
            && self.reading
            && !self.read_ended
            && !self.connect_in_progress
            && !self.read_queued
    }

    /// Reads into `buf` and passes each read to `sink`, until `WouldBlock` (or a short read
    /// where that shows the queue drained), end of stream,
    /// an error, a `Pause` answer, or `budget` bytes. Returns how many completions were
    /// delivered and whether the budget ran out with the socket still readable.
    pub(crate) fn read_some<F>(
        &mut self,
        slot: Slot,
        buf: &mut [u8],
        budget: usize,
        sink: &mut F,
    ) -> (usize, bool)
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = 0;
        let mut used = 0;
        loop {
            if used >= budget {
                return (delivered, true);
            }
            let want = buf.len().min(budget - used);
            match (&self.stream).read(&mut buf[..want]) {
                Ok(0) => {
                    self.readable = false;
                    self.read_ended = true;
                    sink(Completion::Received {
                        slot,
                        result: Ok(&[]),
                        direct: None,
                    });
                    return (delivered + 1, false);
                }
                Ok(n) => {
                    used += n;
                    delivered += 1;
                    // Rule 8 of the driver contract: the socket may be written during the
                    // delivery while no send of the core's is in flight.
                    let idle = self.send_stage == SendStage::Idle && !self.connect_in_progress;
                    let mut now = WriteNowStream(&self.stream);
                    let flow = sink(Completion::Received {
                        slot,
                        result: Ok(&buf[..n]),
                        direct: if idle { Some(&mut now) } else { None },
                    });
                    if flow == Flow::Pause {
                        self.reading = false;
                        return (delivered, false);
                    }
                    if n < want && sys::SHORT_READ_DRAINS && !self.read_closed {
                        // The queue is empty: the next segment raises a new edge. Saves the
                        // `recv` that would only return `WouldBlock`.
                        self.readable = false;
                        return (delivered, false);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return (delivered, false);
                }
                Err(err) => {
                    self.readable = false;
                    self.read_ended = true;
                    sink(Completion::Received {
                        slot,
                        result: Err(err),
                        direct: None,
                    });
                    return (delivered + 1, false);
                }
            }
        }
    }
}

/// A connection's socket as the core writes it during a `Received` (driver contract,
/// rule 8): one non-blocking vectored write.
struct WriteNowStream<'a>(&'a TcpStream);

impl WriteNow for WriteNowStream<'_> {
    fn write_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match sys::send_vectored(self.0, bufs) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }
}

/// How a send attempt ended.
#[derive(Debug)]
pub(crate) enum WriteOutcome {
    /// Nothing could be written; wait for a writable event and try again.
    Blocked,
    /// The send is over: report this as its `Sent`.
    Finished(io::Result<usize>),
}

/// Writes `bufs` to `stream` until everything is written or the socket would block.
///
/// Bytes written before a `WouldBlock` or an error are reported as a short send (the error,
/// if it persists, shows up at the next send); an error before any byte is the result.
pub(crate) fn write_out(stream: &TcpStream, bufs: &[RawBuf]) -> WriteOutcome {
    let mut written = 0;
    let mut index = 0;
    let mut offset = 0;
    loop {
        while index < bufs.len() && offset == bufs[index].len {
            index += 1;
            offset = 0;
        }
        if index == bufs.len() {
            return WriteOutcome::Finished(Ok(written));
        }
        let mut slices = [IoSlice::new(&[]); sys::MAX_IOV];
        let mut count = 0;
        for (i, buf) in bufs[index..].iter().take(sys::MAX_IOV).enumerate() {
            slices[i] = IoSlice::new(buf.bytes_from(if i == 0 { offset } else { 0 }));
            count += 1;
        }
        match sys::send_vectored(stream, &slices[..count]) {
            Ok(0) => {
                return WriteOutcome::Finished(if written > 0 {
                    Ok(written)
                } else {
                    Err(io::ErrorKind::WriteZero.into())
                });
            }
            Ok(mut n) => {
                written += n;
                while n > 0 {
                    let step = n.min(bufs[index].len - offset);
                    offset += step;
                    n -= step;
                    if offset == bufs[index].len {
                        index += 1;
                        offset = 0;
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                return if written > 0 {
                    WriteOutcome::Finished(Ok(written))
                } else {
                    WriteOutcome::Blocked
                };
            }
            Err(err) => {
                return WriteOutcome::Finished(if written > 0 { Ok(written) } else { Err(err) });
            }
        }
    }
}
