//! [`UringDriver`]: the core's [`Driver`] on io_uring.

use crate::accept::{self, Listener};
use crate::buf_ring::{BufRing, BGID};
use crate::conn::{Conn, SlotEntry};
use crate::error::SetupError;
use crate::recv::{self, Stashed};
use crate::ring::{Ring, Wait};
use crate::setup::{self, TaskRun};
use crate::user_data::{next_gen, Kind, UserData};
use crate::waker::WakeReader;
use io_uring::types::CancelBuilder;
use io_uring::{cqueue, opcode, types};
use ringmill_core::driver::{Completion, Driver, DriverCounters, Flow, ListenerId, Slot, Waker};
use ringmill_core::pool::BufferPool;
use ringmill_core::DriverConfig;
use socket2::SockAddr;
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
    ring: Ring,
    wake: ManuallyDrop<WakeReader>,
    bufs: ManuallyDrop<BufRing>,
    slots: Vec<SlotEntry>,
    listeners: HashMap<u32, Listener>,
    /// Slots whose receive ended with `ENOBUFS`, to re-arm once buffers are back.
    starved: Vec<u32>,
    /// Slots resumed with stashed completions, to deliver at the next poll.
    flush: Vec<u32>,
    /// Listeners resumed with stashed accepts, to deliver at the next poll.
    accept_flush: Vec<u32>,
    /// Slots closed with nothing in flight, whose `Closed` the next poll reports.
    closed: Vec<u32>,
    /// Sends refused because one was in flight on the slot (slot, generation): the next
    /// poll reports a failed `Sent` for each, unless the slot was closed meanwhile.
    refused_sends: Vec<(u32, u32)>,
    /// Reused buffer of reaped CQEs.
    cqes: Vec<cqueue::Entry>,
    description: String,
    enobufs: u64,
    rearms: u64,
    wakeups: u64,
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
        let mut ring = Ring::new(setup.ring);
        let description = format!(
            "io_uring ({}, sq {}, cq {}, multishot accept+recv, provided buffer ring {}x{}, \
             registered buffers: {}, submit stable: {}{})",
            setup.taskrun.label(),
            ring.sq_entries(),
            ring.cq_entries(),
            bufs.count(),
            human_size(bufs.buf_size()),
            if bufs.registered() { "yes" } else { "no" },
            if setup.submit_stable { "yes" } else { "no" },
            setup
                .kernel
                .map(|(a, b)| format!(", kernel {a}.{b}"))
                .unwrap_or_default(),
        );
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
            slots: Vec::new(),
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

    /// The slot table entry for `slot`, growing the table as needed.
    fn entry(&mut self, slot: Slot) -> &mut SlotEntry {
        let i = slot.index();
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, SlotEntry::default);
        }
        &mut self.slots[i]
    }

    /// Arms the multishot receive of `slot`.
    fn arm_recv(ring: &mut Ring, slot: u32, gen: u32, conn: &mut Conn) {
        debug_assert!(!conn.recv.armed);
        conn.recv.armed = true;
        conn.inflight += 1;
        let sqe = recv::recv_sqe(conn.raw_fd(), UserData::new(slot, gen, Kind::Recv));
        // SAFETY: the receive refers to the connection's descriptor, which stays open until
        // the connection's last completion (the connection is dropped only then), and to the
        // provided buffer ring, which outlives every operation (see `Drop`).
        unsafe { ring.push(sqe) };
    }

    /// Stops delivering for `slot`: cancels the armed receive, whose completions until the
    /// cancel lands go to the stash.
    fn pause(ring: &mut Ring, slot: u32, gen: u32, conn: &mut Conn) {
        conn.recv.active = false;
        if conn.recv.armed && !conn.recv.cancelling {
            conn.recv.cancelling = true;
            conn.inflight += 1;
            let target = UserData::new(slot, gen, Kind::Recv).encode();
            let sqe = opcode::AsyncCancel2::new(CancelBuilder::user_data(target))
                .build()
                .user_data(UserData::new(slot, gen, Kind::Cancel).encode());
            // SAFETY: a cancel by user_data points to no memory.
            unsafe { ring.push(sqe) };
        }
    }

    /// Delivers the stash of `slot` while the core wants it; returns whether anything was
    /// delivered. Buffers go back to the ring as soon as the sink returns.
    fn drain_stash<F>(
        ring: &mut Ring,
        bufs: &mut BufRing,
        slot: u32,
        gen: u32,
        conn: &mut Conn,
        sink: &mut F,
    ) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = false;
        while conn.recv.active {
            let Some(item) = conn.recv.stash.pop_front() else {
                break;
            };
            let slot_id = Slot(u64::from(slot));
            let flow = match item {
                Stashed::Data { bid, len } => {
                    let flow = sink(Completion::Received {
                        slot: slot_id,
                        result: Ok(bufs.slice(bid, len as usize)),
                    });
                    bufs.recycle(bid);
                    flow
                }
                Stashed::Copied(bytes) => sink(Completion::Received {
                    slot: slot_id,
                    result: Ok(&bytes),
                }),
                Stashed::Eof => sink(Completion::Received {
                    slot: slot_id,
                    result: Ok(&[]),
                }),
                Stashed::Err(errno) => sink(Completion::Received {
                    slot: slot_id,
                    result: Err(io::Error::from_raw_os_error(errno)),
                }),
            };
            delivered = true;
            if flow == Flow::Pause {
                Self::pause(ring, slot, gen, conn);
            }
        }
        if !conn.recv.active {
            recv::spill(&mut conn.recv.stash, bufs);
        }
        delivered
    }

    /// Arms the multishot accept of listener `id`.
    fn arm_accept(ring: &mut Ring, id: u32, l: &mut Listener) {
        debug_assert!(!l.armed);
        l.armed = true;
        l.inflight += 1;
        let sqe = l.accept_sqe(id);
        // SAFETY: the accept refers only to the listening descriptor, which stays open
        // until the listener's last completion (the entry is removed only then).
        unsafe { ring.push(sqe) };
    }

    /// Stops accepting on `id` for now: cancels the armed accept; accepts that land before
    /// the cancel go to the stash.
    fn pause_accept(ring: &mut Ring, id: u32, l: &mut Listener) {
        l.active = false;
        if l.armed && !l.cancelling {
            l.cancelling = true;
            l.inflight += 1;
            let target = UserData::new(id, 0, Kind::Accept).encode();
            let sqe = opcode::AsyncCancel2::new(CancelBuilder::user_data(target))
                .build()
                .user_data(UserData::new(id, 0, Kind::AcceptCancel).encode());
            // SAFETY: a cancel by user_data points to no memory.
            unsafe { ring.push(sqe) };
        }
    }

    /// Delivers the accept stash of listener `id` while the core wants it.
    fn drain_accepts<F>(ring: &mut Ring, id: u32, l: &mut Listener, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = false;
        while l.active {
            let Some(result) = l.stash.pop_front() else {
                break;
            };
            delivered = true;
            let flow = sink(Completion::Accepted {
                listener: ListenerId(id),
                result,
            });
            if flow == Flow::Pause {
                Self::pause_accept(ring, id, l);
            }
        }
        delivered
    }

    /// Drops the connection of `slot` (closing its descriptor) once nothing of it is in
    /// flight; the caller reports `Closed`.
    fn finish_close(&mut self, slot: u32) {
        let entry = &mut self.slots[slot as usize];
        if let Some(conn) = entry.conn.take() {
            debug_assert_eq!(conn.inflight, 0);
            debug_assert!(conn.recv.stash.is_empty());
            entry.spare_send = Some(conn.send);
            // `conn.fd` is closed here, after the kernel let go of it.
        }
        entry.gen = next_gen(entry.gen);
    }

    /// Delivers what was queued outside `poll`: `Closed` of quiet slots, resumed stashes.
    fn flush_pending<F>(&mut self, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = false;
        let mut closed = std::mem::take(&mut self.closed);
        for slot in closed.drain(..) {
            sink(Completion::Closed {
                slot: Slot(u64::from(slot)),
            });
            delivered = true;
        }
        closed.append(&mut self.closed);
        self.closed = closed;
        for (slot, gen) in std::mem::take(&mut self.refused_sends) {
            let entry = &self.slots[slot as usize];
            if entry.gen == gen && entry.conn.as_ref().is_some_and(|conn| !conn.closing) {
                sink(Completion::Sent {
                    slot: Slot(u64::from(slot)),
                    result: Err(io::Error::other("a send is already in flight on this slot")),
                });
                delivered = true;
            }
        }
        let mut flush = std::mem::take(&mut self.flush);
        for slot in flush.drain(..) {
            let Some(entry) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            let gen = entry.gen;
            if let Some(conn) = entry.conn.as_mut() {
                if !conn.closing {
                    delivered |=
                        Self::drain_stash(&mut self.ring, &mut self.bufs, slot, gen, conn, sink);
                }
            }
        }
        flush.append(&mut self.flush);
        self.flush = flush;
        let mut accept_flush = std::mem::take(&mut self.accept_flush);
        for id in accept_flush.drain(..) {
            if let Some(l) = self.listeners.get_mut(&id) {
                if !l.removed {
                    delivered |= Self::drain_accepts(&mut self.ring, id, l, sink);
                }
            }
        }
        accept_flush.append(&mut self.accept_flush);
        self.accept_flush = accept_flush;
        delivered
    }

    /// Re-arms the receives that ran out of buffers, oldest first, at most one per buffer
    /// back in the ring: re-arming every starved receive at once would only earn most of
    /// them another `ENOBUFS` (a herd of useless completions per recycled buffer).
    fn feed_starved(&mut self) {
        let mut budget = self.bufs.in_ring();
        if self.starved.is_empty() || budget == 0 {
            return;
        }
        let mut fed = 0;
        while fed < self.starved.len() && budget > 0 {
            let slot = self.starved[fed];
            fed += 1;
            let Some(entry) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            let gen = entry.gen;
            let Some(conn) = entry.conn.as_mut() else {
                continue;
            };
            if !conn.recv.starved || conn.closing {
                continue;
            }
            conn.recv.starved = false;
            if conn.recv.should_arm() {
                Self::arm_recv(&mut self.ring, slot, gen, conn);
                self.rearms += 1;
                budget -= 1;
            }
        }
        self.starved.drain(..fed);
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
            Kind::Send | Kind::Connect | Kind::Cancel => self.on_conn_op(ud, res, sink),
            Kind::Accept => self.on_accept(ud.index, res, flags, sink),
            Kind::AcceptCancel => {
                if let Some(l) = self.listeners.get_mut(&ud.index) {
                    l.inflight -= 1;
                    if l.removed && l.inflight == 0 {
                        self.listeners.remove(&ud.index);
                    }
                }
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

    /// A multishot receive completion.
    fn on_recv<F>(&mut self, ud: UserData, res: i32, flags: u32, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        if bid.is_some() {
            self.bufs.taken();
        }
        let slot = ud.index;
        let Some(entry) = self.slots.get_mut(slot as usize) else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return false;
        };
        let gen = entry.gen;
        let conn = match entry.conn.as_mut() {
            Some(conn) if gen == ud.gen => conn,
            _ => {
                log::debug!("io_uring: stale receive completion for slot {slot}");
                if let Some(bid) = bid {
                    self.bufs.recycle(bid);
                }
                return false;
            }
        };
        if !more {
            conn.inflight -= 1;
            conn.recv.armed = false;
            conn.recv.cancelling = false;
        }
        if conn.closing {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return self.maybe_closed(slot, sink);
        }
        let item = if res > 0 {
            match bid {
                Some(bid) => Some(Stashed::Data {
                    bid,
                    len: res as u32,
                }),
                None => {
                    log::error!("io_uring: receive of {res} bytes without a buffer");
                    conn.recv.ended = true;
                    Some(Stashed::Err(libc::EIO))
                }
            }
        } else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            match -res {
                0 => {
                    conn.recv.ended = true;
                    Some(Stashed::Eof)
                }
                libc::ENOBUFS => {
                    self.enobufs += 1;
                    if !conn.recv.starved {
                        conn.recv.starved = true;
                        self.starved.push(slot);
                    }
                    None
                }
                libc::ECANCELED => None,
                errno => {
                    conn.recv.ended = true;
                    Some(Stashed::Err(errno))
                }
            }
        };
        if let Some(item) = item {
            conn.recv.stash.push_back(item);
        }
        let delivered = Self::drain_stash(&mut self.ring, &mut self.bufs, slot, gen, conn, sink);
        if !more && conn.recv.should_arm() {
            Self::arm_recv(&mut self.ring, slot, gen, conn);
            self.rearms += 1;
        }
        delivered
    }

    /// A send, connect or cancel completion of a connection.
    fn on_conn_op<F>(&mut self, ud: UserData, res: i32, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let slot = ud.index;
        let Some(entry) = self.slots.get_mut(slot as usize) else {
            return false;
        };
        let conn = match entry.conn.as_mut() {
            Some(conn) if entry.gen == ud.gen => conn,
            _ => {
                log::debug!("io_uring: stale {:?} completion for slot {slot}", ud.kind);
                return false;
            }
        };
        conn.inflight -= 1;
        match ud.kind {
            Kind::Send => conn.sending = false,
            Kind::Connect => conn.connect_addr = None,
            _ => {}
        }
        if conn.closing {
            if ud.kind == Kind::Cancel && conn.inflight > 0 {
                // The close's cancel found fewer operations than are still out: make sure
                // the rest end too (a receive sees end of stream, a send or connect fails).
                let outstanding = conn.fd_ops();
                if res < outstanding as i32 {
                    // SAFETY: plain syscall on a descriptor the connection owns.
                    unsafe { libc::shutdown(conn.raw_fd(), libc::SHUT_RDWR) };
                }
            }
            return self.maybe_closed(slot, sink);
        }
        let slot_id = Slot(u64::from(slot));
        let result = if res >= 0 {
            Ok(res)
        } else {
            Err(io::Error::from_raw_os_error(-res))
        };
        match ud.kind {
            Kind::Send => {
                sink(Completion::Sent {
                    slot: slot_id,
                    result: result.map(|n| n as usize),
                });
                true
            }
            Kind::Connect => {
                sink(Completion::Connected {
                    slot: slot_id,
                    result: result.map(drop),
                });
                true
            }
            _ => false,
        }
    }

    /// Reports `Closed` for a closing slot once nothing of it is in flight.
    fn maybe_closed<F>(&mut self, slot: u32, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let done = self.slots[slot as usize]
            .conn
            .as_ref()
            .is_some_and(|c| c.closing && c.inflight == 0);
        if done {
            self.finish_close(slot);
            sink(Completion::Closed {
                slot: Slot(u64::from(slot)),
            });
        }
        done
    }

    /// A multishot accept completion.
    fn on_accept<F>(&mut self, id: u32, res: i32, flags: u32, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let more = cqueue::more(flags);
        let Some(l) = self.listeners.get_mut(&id) else {
            accept::discard(res);
            return false;
        };
        if !more {
            l.inflight -= 1;
            l.armed = false;
            l.cancelling = false;
        }
        if l.removed {
            accept::discard(res);
            if l.inflight == 0 {
                self.listeners.remove(&id);
            }
            return false;
        }
        if let Some(result) = accept::accepted(res) {
            l.stash.push_back(result);
        }
        let delivered = Self::drain_accepts(&mut self.ring, id, l, sink);
        if !more && l.active && !l.armed {
            Self::arm_accept(&mut self.ring, id, l);
            self.rearms += 1;
        }
        delivered
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
        if self.listeners.contains_key(&id.0) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("listener id {} is in use", id.0),
            ));
        }
        let l = self
            .listeners
            .entry(id.0)
            .or_insert(Listener::new(listener));
        Self::arm_accept(&mut self.ring, id.0, l);
        Ok(())
    }

    fn resume_accept(&mut self, id: ListenerId) {
        let Some(l) = self.listeners.get_mut(&id.0) else {
            return;
        };
        if l.removed || l.active {
            return;
        }
        l.active = true;
        if !l.stash.is_empty() {
            self.accept_flush.push(id.0);
        }
        if !l.armed {
            Self::arm_accept(&mut self.ring, id.0, l);
            self.rearms += 1;
        }
    }

    fn unlisten(&mut self, id: ListenerId) {
        let Some(l) = self.listeners.get_mut(&id.0) else {
            return;
        };
        if l.removed {
            return;
        }
        Self::pause_accept(&mut self.ring, id.0, l);
        // The descriptor can only be closed once the accept's cancel completes, a poll or
        // more from now; until then the kernel would keep completing handshakes into a
        // queue nobody accepts from. Shutting a listening socket down takes it out of
        // LISTEN at once (Linux), so connects are refused from here on.
        if let Err(e) = socket2::SockRef::from(&l.sock).shutdown(std::net::Shutdown::Both) {
            log::debug!("ringmill: shutdown of listener {}: {e}", id.0);
        }
        l.removed = true;
        l.stash.clear();
        if l.inflight == 0 {
            self.listeners.remove(&id.0);
        }
    }

    fn register(&mut self, slot: Slot, stream: TcpStream) -> io::Result<()> {
        let entry = self.entry(slot);
        if entry.conn.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("slot {} is in use", slot.index() as u32),
            ));
        }
        let fd = OwnedFd::from(stream);
        entry.conn = Some(Conn::new(fd, entry.spare_send.take()));
        Ok(())
    }

    fn connect(&mut self, slot: Slot, socket: socket2::Socket, addr: SocketAddr) -> io::Result<()> {
        let entry = self.entry(slot);
        if entry.conn.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("slot {} is in use", slot.index() as u32),
            ));
        }
        let gen = entry.gen;
        let mut conn = Conn::new(OwnedFd::from(socket), entry.spare_send.take());
        let sa = Box::new(SockAddr::from(addr));
        let sqe = opcode::Connect::new(
            types::Fd(conn.raw_fd()),
            sa.as_ptr().cast::<libc::sockaddr>(),
            sa.len(),
        )
        .build()
        .user_data(UserData::new(slot.index() as u32, gen, Kind::Connect).encode());
        conn.connect_addr = Some(sa);
        conn.inflight += 1;
        entry.conn = Some(conn);
        // SAFETY: the connect points to the boxed address, kept in `connect_addr` until the
        // connect's completion, and to the connection's descriptor, open until then.
        unsafe { self.ring.push(sqe) };
        Ok(())
    }

    fn recv(&mut self, slot: Slot) {
        let Some(entry) = self.slots.get_mut(slot.index()) else {
            return;
        };
        let gen = entry.gen;
        let Some(conn) = entry.conn.as_mut() else {
            return;
        };
        if conn.closing || conn.recv.active {
            return;
        }
        conn.recv.active = true;
        if !conn.recv.stash.is_empty() {
            self.flush.push(slot.index() as u32);
        }
        if conn.recv.should_arm() {
            Self::arm_recv(&mut self.ring, slot.index() as u32, gen, conn);
        }
    }

    fn pause_recv(&mut self, slot: Slot) {
        let Some(entry) = self.slots.get_mut(slot.index()) else {
            return;
        };
        let gen = entry.gen;
        let Some(conn) = entry.conn.as_mut() else {
            return;
        };
        if conn.closing || !conn.recv.active {
            return;
        }
        Self::pause(&mut self.ring, slot.index() as u32, gen, conn);
    }

    unsafe fn send(&mut self, slot: Slot, bufs: &[IoSlice<'_>]) {
        let Some(entry) = self.slots.get_mut(slot.index()) else {
            debug_assert!(false, "send on unknown slot {}", slot.index() as u32);
            return;
        };
        let gen = entry.gen;
        let Some(conn) = entry.conn.as_mut() else {
            debug_assert!(false, "send on unknown slot {}", slot.index() as u32);
            return;
        };
        if conn.closing {
            return;
        }
        if conn.sending {
            debug_assert!(false, "two sends in flight on slot {}", slot.index() as u32);
            // Refused, as the mio driver does: a second request in flight would overwrite
            // the first one's `msghdr` and could reach the socket before the first one's
            // bytes.
            self.refused_sends.push((slot.index() as u32, gen));
            return;
        }
        let fd = conn.raw_fd();
        let sqe = conn.send.prepare(
            fd,
            bufs,
            UserData::new(slot.index() as u32, gen, Kind::Send),
        );
        conn.sending = true;
        conn.inflight += 1;
        // SAFETY: a SENDMSG points to the connection's boxed `msghdr` and iovec array,
        // which are not touched again before its completion (one send in flight per slot),
        // and to the bytes of `bufs`, which the caller keeps valid and unchanged until
        // `Sent` or `Closed` (this function's contract); both are reported only after the
        // send's final completion.
        unsafe { self.ring.push(sqe) };
    }

    fn shutdown_write(&mut self, slot: Slot) {
        let Some(conn) = self
            .slots
            .get_mut(slot.index())
            .and_then(|entry| entry.conn.as_mut())
        else {
            return;
        };
        if conn.closing {
            return;
        }
        debug_assert!(!conn.sending, "shutdown_write with a send in flight");
        // A direct syscall: it never blocks, and nothing waits for its outcome.
        if let Err(err) = socket2::SockRef::from(&conn.fd).shutdown(std::net::Shutdown::Write) {
            log::debug!(
                "io_uring: shutdown(SHUT_WR) of slot {}: {err}",
                slot.index() as u32
            );
        }
    }

    fn close(&mut self, slot: Slot) {
        let Some(entry) = self.slots.get_mut(slot.index()) else {
            return;
        };
        let gen = entry.gen;
        let Some(conn) = entry.conn.as_mut() else {
            return;
        };
        if conn.closing {
            return;
        }
        conn.closing = true;
        conn.recv.active = false;
        for item in conn.recv.stash.drain(..) {
            if let Stashed::Data { bid, .. } = item {
                self.bufs.recycle(bid);
            }
        }
        if conn.inflight == 0 {
            self.finish_close(slot.index() as u32);
            self.closed.push(slot.index() as u32);
            return;
        }
        conn.inflight += 1;
        let sqe = opcode::AsyncCancel2::new(CancelBuilder::fd(types::Fd(conn.raw_fd())).all())
            .build()
            .user_data(UserData::new(slot.index() as u32, gen, Kind::Cancel).encode());
        // SAFETY: a cancel by descriptor points to no memory; the descriptor stays open
        // until this cancel's own completion is reaped.
        unsafe { self.ring.push(sqe) };
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
        if self.bufs.registered() {
            let _ = submitter.unregister_buffers();
        }
        // SAFETY: nothing is in flight any more and the buffer ring is unregistered, so the
        // kernel holds no pointer into these; each is dropped exactly once, here.
        unsafe {
            ManuallyDrop::drop(&mut self.bufs);
            ManuallyDrop::drop(&mut self.wake);
        }
    }
}

/// `65536` -> `"64KiB"`, `1000` -> `"1000B"`.
fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{}MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{}KiB", bytes >> 10)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Echoes `total` bytes over one connection through a driver built with `mode` only.
    fn echo_once(mode: TaskRun, total: usize) {
        let config = DriverConfig {
            buffer_size: 4096,
            buffer_count: 4,
            ring_entries: 8,
            cq_entries: 16,
            ..DriverConfig::default()
        };
        let mut driver = UringDriver::with_modes(&config, &[mode]).expect("ring setup");
        assert!(
            driver.describe().contains(mode.label()),
            "{}",
            driver.describe()
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        driver.listen(ListenerId(0), listener).unwrap();
        let data: Vec<u8> = (0..total).map(|i| (i * 7 % 253) as u8).collect();
        let expect = data.clone();
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                w.write_all(&data).unwrap();
                w.shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            writer.join().unwrap();
            got
        });
        let slot = Slot(5);
        let mut pending: Vec<u8> = Vec::new();
        let mut sending: Option<(Vec<u8>, usize)> = None;
        let (mut eof, mut closing, mut closed) = (false, false, false);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !closed {
            assert!(Instant::now() < deadline, "{mode:?}: echo stalled");
            let mut accepted = None;
            let mut sent = None;
            driver
                .poll(Some(Duration::from_millis(50)), |c| {
                    match c {
                        Completion::Accepted { result, .. } => accepted = Some(result.unwrap().0),
                        Completion::Received { result, .. } => {
                            let d = result.unwrap();
                            assert!(!eof, "data after EOF");
                            if d.is_empty() {
                                eof = true;
                            }
                            pending.extend_from_slice(d);
                        }
                        Completion::Sent { result, .. } => sent = Some(result.unwrap()),
                        Completion::Closed { .. } => closed = true,
                        Completion::Connected { .. } => panic!("no connect here"),
                    }
                    Flow::Continue
                })
                .unwrap();
            if let Some(stream) = accepted {
                driver.register(slot, stream).unwrap();
                driver.recv(slot);
            }
            if let Some(n) = sent {
                let (buf, off) = sending.as_mut().unwrap();
                *off += n;
                if *off == buf.len() {
                    sending = None;
                } else {
                    // SAFETY: `buf` stays in `sending`, unchanged, until `Sent`.
                    unsafe { driver.send(slot, &[IoSlice::new(&buf[*off..])]) };
                }
            }
            if sending.is_none() && !pending.is_empty() {
                let buf = std::mem::take(&mut pending);
                // SAFETY: `buf` moves into `sending` (its heap block stays put) until `Sent`.
                unsafe { driver.send(slot, &[IoSlice::new(&buf)]) };
                sending = Some((buf, 0));
            }
            if eof && sending.is_none() && pending.is_empty() && !closing {
                closing = true;
                driver.close(slot);
            }
        }
        assert_eq!(client.join().unwrap(), expect, "{mode:?}: echo differs");
    }

    #[test]
    fn echo_with_every_flag_combination() {
        for mode in setup::ALL_TASKRUN {
            echo_once(mode, 300_000);
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(65536), "64KiB");
        assert_eq!(human_size(1 << 20), "1MiB");
        assert_eq!(human_size(1000), "1000B");
    }
}
