//! ringmill-mio: the mio driver (epoll on Linux, kqueue on the BSDs and Apple systems,
//! AFD/IOCP on Windows).
//!
//! [`MioDriver`] implements the completion-style
//! [`Driver`](ringmill_core::driver::Driver) contract on top of mio's edge-triggered
//! readiness: it performs the non-blocking syscalls itself when readiness arrives and
//! reports their outcomes as the same completions the io_uring driver reports.
//!
//! # How each operation is carried out
//!
//! * **Tokens** name the waker, a listener (by id) or a connection (by slot and the low
//!   bits of the slot's generation, so an event for an earlier use of a slot is dropped).
//! * **Receiving.** Connections are registered for both readable and writable readiness.
//!   Because an edge is reported only once, each connection remembers that it is still
//!   readable until a read hits `WouldBlock`, or, on epoll and kqueue, until a read returns
//!   less than it asked for: both raise a new edge for every segment that arrives later, so
//!   the read that would only see `WouldBlock` is skipped (not after the peer hung up,
//!   which raises no further edge: then reading goes on to end of stream). On readiness the driver reads into the
//!   loop's one receive buffer (`buffer_size` bytes, allocated once; an idle connection
//!   holds none) and lends each read to the sink. It stops early after `read_budget` bytes
//!   (so one busy connection cannot starve the others), on a `Pause` answer, or when
//!   `pause_recv` was called; reading then goes on at a later poll without a new edge, and
//!   a poll that has such work left does not block.
//! * **Sending.** `send` records the request's buffers (in storage reused between sends)
//!   and writes at once, with `send` for one buffer and vectored `sendmsg` for more
//!   (`MSG_NOSIGNAL`; no flag on Apple systems, whose sockets get `SO_NOSIGPIPE`), until
//!   everything is written or the socket would block. If anything was written, or the
//!   write failed, the `Sent` is queued for the next poll (which then does not block). If
//!   nothing could be written, the request waits for the next writable event. A short
//!   send is reported as such; the core re-issues the rest.
//! * **Polling.** A `poll` first delivers what earlier calls queued (`Sent`, `Closed`, ...)
//!   and the reads and accepts left over by a budget. If that delivered anything, the call
//!   returns without asking the poller, every other time: the zero-timeout wait that would
//!   follow mostly comes back empty in request/response traffic, and alternating keeps any
//!   socket from waiting more than one extra turn.
//! * **Accepting** goes on until `WouldBlock` (or a per-poll budget); each accepted stream
//!   is handed over non-blocking. A failed accept is reported and retried at the next poll;
//!   after a `Pause` answer nothing is accepted until `resume_accept`, which looks at the
//!   listener again on the next poll even without a new event.
//! * **Connecting.** `connect` starts a non-blocking connect and registers the socket; the
//!   first event on it decides the outcome (`SO_ERROR`, then `getpeername`). A connect
//!   that fails at once (the syscall returns an error other than "in progress") is reported
//!   as a `Connected` error from the next poll, exactly as an asynchronous failure would
//!   be (and as the io_uring driver reports every connect); `connect` itself only fails
//!   when the socket cannot be set up or registered.
//! * **Closing** deregisters and closes the socket at once, forgets any send, drops
//!   completions still queued for the slot, and queues its one `Closed` for the next poll.
//! * **Interrupted syscalls** (`EINTR`) are retried, including the wait itself.
//!
//! Socket options are the core's business: the driver sets none, except `SO_NOSIGPIPE`
//! where the platform needs it.
//!
//! A [`MioDriver`] is `Send`, but is meant to be used from one loop thread; its waker may be
//! used from any thread.
//!
//! # Not a public API
//!
//! This crate is an engine part of `ringmill`, released with it in lockstep; applications
//! use `ringmill`, which picks the backend. Its items are not semver surface and may change
//! in any release.

mod conn;
mod driver;
mod listener;
mod reactor;
mod ready;
mod sys;
mod token;
mod waker;

pub use driver::MioDriver;
