//! [`UringDriver`]: the core's [`Driver`] on io_uring: its state, setup, `poll` (submit,
//! wait, reap) and the routing of each completion by its `user_data` kind.
//!
//! The operations themselves live by concept, each file with its submissions, its
//! completions and what it delivers outside `poll`: accepting in `accept.rs`, receiving in
//! `recv.rs`, sending in `send.rs`, closing in `close.rs`, and taking a socket over
//! (`register`, `connect`) in `conn.rs`. The [`Driver`] impl here only hands each call on.

use crate::accept::{self, Listener};
use crate::buf_ring::{BufRing, BGID};
use crate::conn::Conn;
use crate::error::SetupError;
use crate::ring::{Ring, Wait};
use crate::send::SendBuf;
use crate::setup::{self, TaskRun};
use crate::user_data::{Kind, UserData};
use crate::waker::WakeReader;
use io_uring::types::CancelBuilder;
use io_uring::{cqueue, opcode};
use ringmill_core::driver::{Completion, Driver, DriverCounters, Flow, ListenerId, Slot, Waker};
use ringmill_core::pool::BufferPool;
use ringmill_core::slots::SlotTable;
use ringmill_core::DriverConfig;
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reaping rounds per poll: a round that found the completion queue overflowed flushes
/// the kernel's side list and reaps again.
const MAX_REAP_ROUNDS: usize = 16;

/// How long dropping the driver waits for the kernel to hand back every operation.
const DROP_DRAIN: Duration = Duration::from_secs(2);

/// The io_uring driver. See the [crate docs](crate) for how each operation maps onto the
/// ring.
///
/// It is built by [`UringDriver::new`] on the loop thread that then uses it (the ring is
/// set up with `IORING_SETUP_SINGLE_ISSUER` where the kernel has it), and it is not
/// `Send`: only its [`Waker`] crosses threads.
///
/// Dropping it cancels every operation still in the kernel and waits (up to two seconds)
/// for all of them to come back before the receive buffers are freed; descriptors it owns
/// are closed. Drop it on its loop thread: elsewhere the ring refuses the wait, and the
/// buffers are leaked rather than freed while the kernel may still write to them.
pub struct UringDriver {
    // Field order matters for drop: the ring goes before the memory it may point to.
    pub(crate) ring: Ring,
    pub(crate) wake: ManuallyDrop<WakeReader>,
    pub(crate) bufs: ManuallyDrop<BufRing>,
    /// The connections, at the core's slots.
    pub(crate) slots: SlotTable<Conn>,
    /// Send storage of closed connections, reused by the next ones. Boxed because a
    /// connection's `msghdr` must keep its address while the kernel may read it, and the
    /// box moves in and out of here as it is.
    #[allow(clippy::vec_box)]
    pub(crate) spare_sends: Vec<Box<SendBuf>>,
    pub(crate) listeners: HashMap<u32, Listener>,
    /// Slots whose receive ended with `ENOBUFS`, to re-arm once buffers are back.
    pub(crate) starved: Vec<Slot>,
    /// Slots resumed with stashed completions, to deliver at the next poll.
    pub(crate) flush: Vec<Slot>,
    /// Listeners resumed with stashed accepts, to deliver at the next poll.
    pub(crate) accept_flush: Vec<u32>,
    /// Slots closed with nothing in flight, whose `Closed` the next poll reports.
    pub(crate) closed: Vec<Slot>,
    /// Sends refused because one was in flight on the slot: the next poll reports a
    /// failed `Sent` for each, unless the slot was closed meanwhile.
    pub(crate) refused_sends: Vec<Slot>,
    /// Reused buffer of reaped CQEs.
    pub(crate) cqes: Vec<cqueue::Entry>,
    pub(crate) description: String,
    pub(crate) enobufs: u64,
    pub(crate) rearms: u64,
    pub(crate) wakeups: u64,
}

impl UringDriver {
    /// Sets up the ring, the provided buffer ring and the waker for one loop thread.
    ///
    /// Call it on the thread that will use the driver. The ring is built with
    /// `SINGLE_ISSUER|DEFER_TASKRUN`, else `COOP_TASKRUN|TASKRUN_FLAG`, else plain flags,
    /// with `config.ring_entries` SQEs and `config.cq_entries` CQEs; the provided buffer
    /// ring holds `config.buffer_count` buffers of `config.buffer_size` bytes.
    ///
    /// # Errors
    ///
    /// A [`SetupError`] with the reason when io_uring is denied (`EPERM`: seccomp or
    /// `kernel.io_uring_disabled`), absent (`ENOSYS`), out of memory (`ENOMEM`), refuses
    /// the configuration (`EINVAL`), or lacks a feature or opcode the driver needs
    /// (`EOPNOTSUPP`).
    pub fn new(config: &DriverConfig) -> Result<Self, SetupError> {
        Self::with_modes(config, &setup::ALL_TASKRUN)
    }

    /// [`new`](Self::new), trying only the flag combinations in `modes`.
    pub(crate) fn with_modes(config: &DriverConfig, modes: &[TaskRun]) -> Result<Self, SetupError> {
        if let Err(e) = config.validate() {
            let reason = format!("invalid driver configuration: {e}");
            return Err(SetupError::new(
                reason.clone(),
                io::Error::new(io::ErrorKind::InvalidInput, reason),
            ));
        }
        let setup = setup::build(config, modes)?;
        let pool = BufferPool::new(config.buffer_size, config.buffer_count)
            .map_err(|e| SetupError::new("allocating the receive buffer pool failed", e))?;
        let bufs = BufRing::new(&setup.ring, pool)?;
        let wake = WakeReader::new()
            .map_err(|e| SetupError::new("creating the waker's eventfd failed", e))?;
        let description = setup::describe(&setup, &bufs);
        let mut ring = Ring::new(setup.ring);
        let mut wake = ManuallyDrop::new(wake);
        let sqe = wake.read_sqe();
        // SAFETY: the read targets the waker's boxed buffer and eventfd, both owned by the
        // driver and kept until the ring has handed every operation back (see `Drop`).
        unsafe { ring.push(sqe) };
        log::debug!("{description}");
        Ok(Self {
            ring,
            wake,
            bufs: ManuallyDrop::new(bufs),
            slots: SlotTable::new(),
            spare_sends: Vec::new(),
            listeners: HashMap::new(),
            starved: Vec::new(),
            flush: Vec::new(),
            accept_flush: Vec::new(),
            closed: Vec::new(),
            refused_sends: Vec::new(),
            cqes: Vec::new(),
            description,
            enobufs: 0,
            rearms: 0,
            wakeups: 0,
        })
    }

    /// Delivers what was queued outside `poll`: `Closed` of quiet slots, refused sends,
    /// resumed stashes.
    fn flush_pending<F>(&mut self, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = self.flush_closed(sink);
        delivered |= self.flush_refused(sink);
        delivered |= self.flush_stashes(sink);
        delivered |= self.flush_accepts(sink);
        delivered
    }

    /// Reaps and dispatches every completion; returns whether anything reached the sink
    /// or a wake-up came.
    fn complete<F>(&mut self, sink: &mut F) -> io::Result<bool>
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut cqes = std::mem::take(&mut self.cqes);
        let mut progress = false;
        let mut result = Ok(());
        for _ in 0..MAX_REAP_ROUNDS {
            let overflowed = self.ring.reap(&mut cqes);
            if cqes.is_empty() && !overflowed {
                break;
            }
            for cqe in cqes.drain(..) {
                progress |= self.dispatch(&cqe, sink);
            }
            if overflowed {
                // The kernel holds completions on its overflow list: let it flush them.
                if let Err(e) = self.ring.enter(Wait::No) {
                    result = Err(e);
                    break;
                }
            }
        }
        cqes.clear();
        self.cqes = cqes;
        result.map(|()| progress)
    }

    /// Routes one completion; returns whether it reached the sink or was a wake-up.
    fn dispatch<F>(&mut self, cqe: &cqueue::Entry, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let (res, flags) = (cqe.result(), cqe.flags());
        let Some(ud) = UserData::decode(cqe.user_data()) else {
            log::warn!(
                "io_uring: completion with unknown user_data {:#x}",
                cqe.user_data()
            );
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.bufs.taken();
                self.bufs.recycle(bid);
            }
            return false;
        };
        match ud.kind {
            Kind::Recv => self.on_recv(ud, res, flags, sink),
            Kind::Send => self.on_send(ud, res, sink),
            Kind::Connect => self.on_connect(ud, res, sink),
            Kind::Cancel => self.on_cancel(ud, res, sink),
            Kind::Accept => self.on_accept(ud.index, res, flags, sink),
            Kind::AcceptCancel => {
                self.on_accept_cancel(ud.index);
                false
            }
            Kind::Wake => {
                self.wakeups += 1;
                if res >= 0 || matches!(-res, libc::EINTR | libc::EAGAIN | libc::ECANCELED) {
                    let sqe = self.wake.read_sqe();
                    // SAFETY: as in `new`: the buffer and eventfd live as long as the ring.
                    unsafe { self.ring.push(sqe) };
                } else {
                    log::error!(
                        "io_uring: waker read failed: {}; cross-thread wake-ups stop working",
                        io::Error::from_raw_os_error(-res)
                    );
                }
                true
            }
            Kind::Drain => false,
        }
    }
}

impl Driver for UringDriver {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.wake.waker()
    }

    fn listen(&mut self, id: ListenerId, listener: TcpListener) -> io::Result<()> {
        self.add_listener(id, listener)
    }

    fn resume_accept(&mut self, id: ListenerId) {
        self.resume_listener(id);
    }

    fn unlisten(&mut self, id: ListenerId) {
        self.remove_listener(id);
    }

    fn register(&mut self, slot: Slot, stream: TcpStream) -> io::Result<()> {
        self.adopt(slot, OwnedFd::from(stream)).map(drop)
    }

    fn connect(&mut self, slot: Slot, socket: socket2::Socket, addr: SocketAddr) -> io::Result<()> {
        self.start_connect(slot, socket, addr)
    }

    fn recv(&mut self, slot: Slot) {
        self.start_recv(slot);
    }

    fn pause_recv(&mut self, slot: Slot) {
        self.stop_recv(slot);
    }

    unsafe fn send(&mut self, slot: Slot, bufs: &[IoSlice<'_>]) {
        // SAFETY: `start_send` asks exactly what this function's caller guarantees: the
        // memory of `bufs` stays valid and unchanged until this slot's `Sent` or `Closed`.
        unsafe { self.start_send(slot, bufs) }
    }

    fn shutdown_write(&mut self, slot: Slot) {
        self.shut_write(slot);
    }

    fn close(&mut self, slot: Slot) {
        self.start_close(slot);
    }

    fn poll<F>(&mut self, timeout: Option<Duration>, mut sink: F) -> io::Result<()>
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let wait = match timeout {
            None => Wait::Forever,
            Some(t) if t.is_zero() => Wait::No,
            Some(t) => Instant::now()
                .checked_add(t)
                .map_or(Wait::Forever, Wait::Until),
        };
        let mut progress = self.flush_pending(&mut sink);
        loop {
            let this_wait = if progress || self.ring.has_backlog() {
                Wait::No
            } else {
                wait
            };
            self.ring.enter(this_wait)?;
            progress |= self.complete(&mut sink)?;
            self.feed_starved();
            progress |= self.flush_pending(&mut sink);
            // Completions that only the driver cares about (cancels) do not end the wait.
            let expired = match this_wait {
                Wait::No => true,
                Wait::Until(deadline) => Instant::now() >= deadline,
                Wait::Forever => false,
            };
            if progress || expired {
                return Ok(());
            }
        }
    }

    fn counters(&self) -> DriverCounters {
        DriverCounters {
            enters: self.ring.enters,
            sqes: self.ring.sqes,
            cqes: self.ring.cqes,
            enobufs: self.enobufs,
            cq_overflows: self.ring.cq_overflows,
            rearms: self.rearms,
            events: 0,
            wakeups: self.wakeups,
            recv_buffers_out: (self.bufs.count() - self.bufs.in_ring()) as u64,
        }
    }
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        // Every operation must be back from the kernel before the memory it points to
        // (receive buffers, the waker's buffer, send headers) is freed.
        let sqe = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data(UserData::new(0, 0, Kind::Drain).encode());
        // SAFETY: a cancel-any points to no memory.
        unsafe { self.ring.push(sqe) };
        let deadline = Instant::now() + DROP_DRAIN;
        let mut cqes = Vec::new();
        while self.ring.inflight > 0 && Instant::now() < deadline {
            let step = (Instant::now() + Duration::from_millis(100)).min(deadline);
            if let Err(e) = self.ring.enter(Wait::Until(step)) {
                log::warn!("io_uring: waiting for cancelled operations failed: {e}");
                break;
            }
            self.ring.reap(&mut cqes);
            for cqe in cqes.drain(..) {
                if let Some(UserData {
                    kind: Kind::Accept, ..
                }) = UserData::decode(cqe.user_data())
                {
                    accept::discard(cqe.result());
                }
            }
        }
        if self.ring.inflight > 0 {
            log::warn!(
                "io_uring: {} operation(s) still in the kernel at drop; leaking their buffers",
                self.ring.inflight
            );
            return;
        }
        let submitter = self.ring.io_uring().submitter();
        if let Err(e) = submitter.unregister_buf_ring(BGID) {
            log::debug!("io_uring: unregistering the buffer ring failed: {e}");
        }
        // SAFETY: nothing is in flight any more and the buffer ring is unregistered, so the
        // kernel holds no pointer into these; each is dropped exactly once, here.
        unsafe {
            ManuallyDrop::drop(&mut self.bufs);
            ManuallyDrop::drop(&mut self.wake);
        }
    }
}
