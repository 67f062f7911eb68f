//! The driver contract: the one seam between the shared core and a backend.
//!
//! The core decides *what happens to a connection* (callback order, write queue,
//! watermarks, close protocol, timers); a driver only decides *how bytes move*. Every
//! driver is **completion-style**: the core asks for an operation, and the driver later
//! reports its outcome as a [`Completion`] from [`Driver::poll`]. The io_uring driver maps
//! operations onto SQEs and CQEs; the mio driver performs the non-blocking syscalls when
//! readiness arrives and reports the same completions.
//!
//! # Identities
//!
//! * A connection is named by a [`Slot`], chosen by the core. A slot is handed to the
//!   driver by [`Driver::register`] or [`Driver::connect`] and stays owned by the driver
//!   until the driver reports [`Completion::Closed`] for it, after [`Driver::close`]. The
//!   core never reuses a slot's index before that `Closed`. A slot carries the generation
//!   of its use of the index ([`Slot::generation`]), which changes every time the core
//!   reuses the index: a driver keeps its per-connection state in a
//!   [`SlotTable`](crate::slots::SlotTable) filled at the core's slots, and tags its
//!   in-kernel operations with the slot's generation (or its low bits), so that a late
//!   completion for an earlier use of the index is recognised and dropped. A driver needs
//!   no generation counter of its own.
//! * A listener is named by a [`ListenerId`]. The core never reuses a listener id within
//!   one loop.
//!
//! # Operations and their completions
//!
//! | operation | completions | notes |
//! |---|---|---|
//! | [`listen`](Driver::listen) | [`Accepted`](Completion::Accepted), repeatedly | until [`unlisten`](Driver::unlisten) or a [`Flow::Pause`] answer |
//! | [`register`](Driver::register) | none by itself | the socket is connected; start reading with `recv` |
//! | [`connect`](Driver::connect) | exactly one [`Connected`](Completion::Connected) | unless closed first |
//! | [`recv`](Driver::recv) | [`Received`](Completion::Received), repeatedly | until EOF, an error, [`pause_recv`](Driver::pause_recv) or a [`Flow::Pause`] answer |
//! | [`send`](Driver::send) | exactly one [`Sent`](Completion::Sent) | at most one send in flight per slot |
//! | [`shutdown_write`](Driver::shutdown_write) | none | FIN after the bytes already sent; receiving goes on |
//! | [`close`](Driver::close) | exactly one [`Closed`](Completion::Closed) | nothing else for that slot after `close` is called |
//!
//! Rules every driver keeps:
//!
//! 1. **No completion for a closed slot.** Once [`Driver::close`] has been called for a
//!    slot, the only completion the driver reports for it is one `Closed`, and it reports
//!    it only when the kernel can no longer touch anything of that connection (every
//!    in-flight operation has completed or been cancelled, the descriptor is closed).
//! 2. **Receives are ordered and lossless.** `Received` completions of one slot carry the
//!    stream's bytes in order, none lost or repeated. `Ok(&[])` means end of stream (the
//!    peer shut down its write side) and ends the receive; an `Err` ends it too. After
//!    either, the driver reports no more `Received` for that slot.
//! 3. **Pause means pause.** When the sink answers [`Flow::Pause`] to a `Received`, or after
//!    [`Driver::pause_recv`], the driver delivers no more `Received` for that slot until
//!    [`Driver::recv`] is called again. Bytes the kernel already handed over meanwhile are
//!    kept, in order, and delivered after the resume. The same holds for `Accepted` and
//!    [`Driver::resume_accept`].
//! 4. **Sends are exact.** `Sent` reports how many bytes of the request the kernel took
//!    (possibly fewer than asked: a short send). The driver never reorders or repeats
//!    bytes, and sends with `MSG_NOSIGNAL` (or the platform's equivalent) so a vanished peer
//!    never raises `SIGPIPE`.
//! 5. **Accept errors are reported, not handled.** A failed accept is reported as
//!    `Accepted { result: Err(..) }`; the core decides whether to back off (by answering
//!    [`Flow::Pause`] and later calling [`Driver::resume_accept`]) or to carry on. A
//!    connection that the peer reset before the driver could learn its address is still
//!    delivered, as every driver does, so that both backends report it alike (`on_connect`,
//!    then the first read's `ConnectionReset` through `on_error`, then `on_disconnect`):
//!    the mio driver gets the address from `accept` itself; the io_uring driver asks
//!    `getpeername` after a multishot accept (which has no address buffer of its own per
//!    connection), and where that fails because the peer is gone it delivers the
//!    unspecified address of the listener's family with port 0.
//! 6. **Interrupted syscalls are retried** inside the driver; `EINTR` never reaches the core.
//! 7. **Waking.** [`Driver::waker`] returns a handle that any thread may call; a
//!    `poll` that is blocked, or the next one, returns promptly after a wake.
//! 8. **Writing during a receive.** A `Received` with bytes may carry a [`WriteNow`]: the
//!    connection's socket, to be written at once, without blocking, while the sink still
//!    holds the received buffer. A driver offers one only when no send is in flight on the
//!    slot (so nothing written now can overtake bytes of an earlier send), and may offer
//!    none at all, and a `WriteNow` may take fewer bytes than the socket would, even none
//!    (a write it finds too small to be worth a system call of its own). What it writes is
//!    reported by its return value only, never by a `Sent`.
//!    This is how an answer made from the received bytes (an echo, a forwarded slice)
//!    reaches the socket with no copy, as a hand-written loop writes from its read buffer.
//!
//! # Broken calls
//!
//! The core never makes these calls; a driver answers them the same way in every build
//! (no debug-only assertion), so that a bug in a caller shows the same on every backend:
//!
//! * **`send` on a slot the driver does not own** (never registered, already `Closed`,
//!   being closed, or an index in use under another [generation](Slot::generation)): the
//!   driver logs it with `log::error!`, sends nothing and reports **no completion** for
//!   it. The connection that does own the index is not touched.
//! * **A second `send` while one is in flight** (its `Sent` not delivered yet): the driver
//!   logs it with `log::error!`, sends none of its bytes and reports **one failed `Sent`**
//!   for it, with the error [`second_send_refused`] (`InvalidInput`), from a later
//!   [`Driver::poll`] (never from inside `send`). The send in flight goes on as if alone and
//!   reports its own one `Sent`. If the slot is closed before the refusal is delivered,
//!   rule 1 holds: only `Closed` is reported.
//! * `recv`, `pause_recv`, `shutdown_write` and `close` on a slot the driver does not own
//!   do nothing. `register` and `connect` on an index the driver still owns fail with
//!   `AlreadyExists` (and drop the socket, as any failure of theirs).
//!
//! # Buffers
//!
//! Received bytes are lent to the sink for the duration of the call only; the driver takes
//! its buffer back when the sink returns. An idle connection holds no receive buffer. Send
//! buffers belong to the core, which keeps them alive and unchanged until the matching
//! `Sent` (or the slot's `Closed`); see the safety contract of [`Driver::send`].
//!
//! # Threads
//!
//! A driver is created on, and used from, one loop thread. Only its [`Waker`] crosses
//! threads.

use crate::clock::Clock;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// The core's name for one connection on one loop: a table index (the low 32 bits) and
/// the generation of this use of the index (the high 32 bits). See the module docs for its
/// lifetime and [`crate::slots`] for the table that hands slots out.
///
/// `Slot(n)` with `n` below 2^32 is index `n` in generation 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(pub u64);

impl Slot {
    /// The slot of `index` in `generation`.
    #[inline]
    pub const fn new(index: u32, generation: u32) -> Slot {
        Slot(index as u64 | ((generation as u64) << 32))
    }

    /// The slot as an index into a table.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as u32 as usize
    }

    /// The generation of this use of the index: a driver tags its kernel operations with
    /// it (or its low bits) to recognise a completion for an earlier use.
    #[inline]
    pub fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({}/{})", self.index(), self.generation())
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index(), self.generation())
    }
}

/// The core's name for one listening socket on one loop; never reused within a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u32);

/// What the core answers to a completion that can repeat (`Accepted`, `Received`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep delivering.
    Continue,
    /// Deliver no more of this kind for this slot or listener until it is resumed.
    Pause,
}

/// The outcome of an operation, reported by [`Driver::poll`].
#[derive(Debug)]
pub enum Completion<'a> {
    /// A listener accepted a connection (a non-blocking, connected stream), or accepting
    /// failed (`EMFILE`, `ENFILE`, `ECONNABORTED`, ...).
    Accepted {
        /// The listener.
        listener: ListenerId,
        /// The accepted stream and its peer, or why accepting failed.
        result: io::Result<(TcpStream, SocketAddr)>,
    },
    /// An outbound connect finished.
    Connected {
        /// The connection.
        slot: Slot,
        /// `Ok` once the handshake completed.
        result: io::Result<()>,
    },
    /// Bytes arrived: `Ok(&[])` is end of stream.
    Received {
        /// The connection.
        slot: Slot,
        /// The bytes, lent for the duration of the call.
        result: io::Result<&'a [u8]>,
        /// The socket, to write at once during the call: offered (with bytes only) when no
        /// send is in flight on the slot, at the driver's choice. See rule 8.
        direct: Option<&'a mut dyn WriteNow>,
    },
    /// A send finished: how many bytes of the request the kernel took.
    Sent {
        /// The connection.
        slot: Slot,
        /// Bytes written, or the error that ended the send.
        result: io::Result<usize>,
    },
    /// The connection is fully closed; the slot is the core's again.
    Closed {
        /// The connection.
        slot: Slot,
    },
}

/// The error of the failed `Sent` a driver reports for a second [`Driver::send`] made
/// while one is in flight on the slot (`InvalidInput`); see the module docs.
pub fn second_send_refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "a send is already in flight on this slot",
    )
}

/// A connection's socket, written synchronously during the delivery of a `Received`
/// (rule 8 of the module docs).
pub trait WriteNow {
    /// Writes as much of `bufs`, in order, as the socket takes at once, without blocking,
    /// and returns how many bytes it took: `Ok(0)` when it would block, or when the driver
    /// declines the write (the core then queues and sends the bytes the ordinary way). An error other
    /// than would-block is returned as it is; the core then sends the same bytes the
    /// ordinary way, whose `Sent` reports the error as any failed send does.
    fn write_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl std::fmt::Debug for dyn WriteNow + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteNow")
    }
}

/// Wakes a loop from any thread.
pub trait Waker: Send + Sync + 'static {
    /// Makes the loop's current or next [`Driver::poll`] return promptly.
    fn wake(&self) -> io::Result<()>;
}

/// Counters a driver keeps about itself; fields a driver has no use for stay zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverCounters {
    /// Calls into the kernel to wait (`io_uring_enter`, `epoll_wait`).
    pub enters: u64,
    /// Submission queue entries pushed (io_uring).
    pub sqes: u64,
    /// Completion queue entries reaped (io_uring).
    pub cqes: u64,
    /// Receives that found the provided buffer ring empty (io_uring).
    pub enobufs: u64,
    /// Completion queue overflows seen (io_uring).
    pub cq_overflows: u64,
    /// Multishot operations re-armed after ending (io_uring).
    pub rearms: u64,
    /// Readiness events handled (mio).
    pub events: u64,
    /// Wake-ups received from other threads.
    pub wakeups: u64,
    /// Receive buffers out of the kernel's reach right now: handed over by completions and
    /// not yet given back (being delivered, or kept while a connection is paused). A gauge,
    /// not a counter: it returns to zero when the loop is idle (io_uring).
    pub recv_buffers_out: u64,
}

/// A backend: moves bytes for the core's loop. The contract is in the module docs.
pub trait Driver: Sized + 'static {
    /// A short, stable name: `"io_uring"` or `"mio"`.
    fn name(&self) -> &'static str;

    /// A one-line description of how the driver is set up (ring flags, features), for logs.
    fn describe(&self) -> String;

    /// A handle that wakes this driver's `poll` from any thread.
    fn waker(&self) -> Arc<dyn Waker>;

    /// Starts accepting on `listener` (already bound, listening and non-blocking).
    fn listen(&mut self, id: ListenerId, listener: TcpListener) -> io::Result<()>;

    /// Resumes accepting after a [`Flow::Pause`] answer to an `Accepted`.
    fn resume_accept(&mut self, id: ListenerId);

    /// Stops accepting and closes the listening socket. Unknown ids are ignored.
    fn unlisten(&mut self, id: ListenerId);

    /// Takes over an established, non-blocking stream as `slot`. Nothing is read until
    /// [`recv`](Self::recv) is called. On error the stream is dropped (closed) and the slot
    /// stays the core's.
    fn register(&mut self, slot: Slot, stream: TcpStream) -> io::Result<()>;

    /// Takes over an unconnected, non-blocking socket as `slot` and connects it to `addr`;
    /// reports one `Connected`. On error the socket is dropped and the slot stays the
    /// core's.
    fn connect(&mut self, slot: Slot, socket: socket2::Socket, addr: SocketAddr) -> io::Result<()>;

    /// Starts (or resumes) delivering `Received` for `slot`.
    fn recv(&mut self, slot: Slot);

    /// Stops delivering `Received` for `slot` until [`recv`](Self::recv); the kernel's
    /// TCP flow control then pushes the peer back.
    fn pause_recv(&mut self, slot: Slot);

    /// Sends the bytes of `bufs`, in order, as one operation; reports one `Sent`.
    ///
    /// # Safety
    ///
    /// The memory `bufs` point to must stay valid and unchanged until the driver reports
    /// `Sent` for `slot`, or `Closed` if the slot is closed first: the kernel may read it
    /// at any time until then. The `IoSlice` array itself may be dropped when this returns.
    /// The caller must not call `send` again for `slot` before that `Sent` (a driver refuses
    /// such a call and keeps nothing of it: see "Broken calls" in the module docs).
    unsafe fn send(&mut self, slot: Slot, bufs: &[IoSlice<'_>]);

    /// Shuts down the sending side of `slot` (`shutdown(SHUT_WR)`): the peer gets end of
    /// stream after every byte already sent, and `Received` goes on as before. The core
    /// calls it with no send in flight and sends nothing on the slot afterwards. A failure
    /// (the peer is gone already) is not reported: the receive side reports it.
    ///
    /// This is how a graceful close avoids a reset: closing a socket that still has unread
    /// input makes the kernel send RST and drop what is still in the send buffer, so the
    /// core shuts the write side down, reads until the peer's end of stream (or its linger
    /// deadline), and only then calls [`close`](Self::close).
    fn shutdown_write(&mut self, slot: Slot);

    /// Starts closing `slot`: cancels its operations, closes the socket once the kernel has
    /// let go, and then reports exactly one `Closed`. Unsent data is dropped.
    fn close(&mut self, slot: Slot);

    /// Waits up to `timeout` (`None`: no limit; zero: do not block) for completions and
    /// passes each to `sink`; also submits every operation requested since the last call.
    /// Returns after delivering at least one completion, after a wake, or at the timeout.
    fn poll<F>(&mut self, timeout: Option<Duration>, sink: F) -> io::Result<()>
    where
        F: FnMut(Completion<'_>) -> Flow;

    /// This driver's counters.
    fn counters(&self) -> DriverCounters;

    /// The clock the loop measures every timeout against (connect, idle, handshake, close
    /// linger, stop, accept back-off, user timers). Real drivers keep the default, the
    /// system's monotonic clock; a simulated driver returns a manual [`Clock`] and moves it
    /// in [`poll`](Self::poll), so no test of a timeout has to sleep. The loop asks once,
    /// when it starts.
    fn clock(&self) -> Clock {
        Clock::system()
    }
}
