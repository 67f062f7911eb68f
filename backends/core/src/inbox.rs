//! A loop's mailbox: commands from other threads (and from callbacks on the loop itself),
//! and the waker that makes a sleeping loop read them.

use crate::clock::Clock;
use crate::conn::{CloseMode, ConnShared};
use crate::driver::{DriverCounters, Waker};
use crate::metrics::LoopMetrics;
use crate::runtime::timer::UserTimer;
use crate::service::Service;
use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

thread_local! {
    /// The id of the loop running on this thread (0: none).
    static CURRENT_LOOP: Cell<usize> = const { Cell::new(0) };
    /// The loop running on this thread, for `LoopHandle::current`.
    static CURRENT_SHARED: RefCell<Option<Arc<LoopShared>>> = const { RefCell::new(None) };
    /// Connections the loop running on this thread must flush, put here by sends made on
    /// that thread (callbacks, timers, posted closures): no inbox, no lock, no wake-up,
    /// and no turn's delay. The loop takes them just before it flushes.
    static LOCAL_FLUSH: RefCell<Vec<Arc<ConnShared>>> = const { RefCell::new(Vec::new()) };
}

static NEXT_LOOP_ID: AtomicUsize = AtomicUsize::new(1);

/// Work for a loop.
pub(crate) enum Command {
    /// The connection has queued bytes to write.
    Flush(Arc<ConnShared>),
    /// Close the connection.
    Close(Arc<ConnShared>, CloseMode),
    /// Stop delivering the connection's bytes.
    Pause(Arc<ConnShared>),
    /// Deliver the connection's bytes again.
    Resume(Arc<ConnShared>),
    /// Accept connections for a service on this listener.
    Listen {
        service: Arc<Service>,
        listener: TcpListener,
        ack: mpsc::SyncSender<std::io::Result<()>>,
    },
    /// Stop a service on this loop: stop its listeners, close its connections.
    StopService {
        service: Arc<Service>,
        ack: mpsc::SyncSender<()>,
    },
    /// Connect a client.
    Connect {
        service: Arc<Service>,
        conn: Arc<ConnShared>,
        socket: socket2::Socket,
        addr: SocketAddr,
        timeout: Duration,
        /// The client's layers, bottom first (empty: none).
        layers: Vec<Box<dyn crate::layer::Layer>>,
        /// Socket options the system refused, reported to `on_error` with the id.
        refused: Vec<crate::error::NetworkError>,
    },
    /// Run a closure on the loop.
    Post(Box<dyn FnOnce() + Send>),
    /// Add a user timer to the loop's heap.
    Timer(UserTimer),
    /// Stop the loop: close everything, then exit.
    Stop,
}

/// The part of a loop other threads can reach.
pub struct LoopShared {
    id: usize,
    index: usize,
    inbox: Mutex<Inbox>,
    notified: AtomicBool,
    stopped: AtomicBool,
    /// A command was pushed by the loop's own thread since the last drain: the next poll
    /// must not block (nothing wakes a loop for its own commands).
    local: AtomicBool,
    /// Signalled when the gate opens (see [`Gate`]).
    gate_opened: Condvar,
    /// The loop's clock (its driver's): every deadline on this loop is measured against it.
    clock: Clock,
    counters: [AtomicU64; 9],
    stats: LoopStats,
}

/// The loop's own counters (written by the loop thread, read by anyone).
#[derive(Default)]
struct LoopStats {
    connections: AtomicUsize,
    timers_fired: AtomicU64,
    tasks_run: AtomicU64,
    task_panics: AtomicU64,
    /// Timers cancelled since the loop last purged its heap.
    cancelled: AtomicUsize,
    timer_entries: AtomicUsize,
    /// User timers scheduled and not yet over (fired once, cancelled, or dropped).
    pending_timers: AtomicUsize,
}

/// Whether the loop thread may dispatch (mill-io's loops wait for `run()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Built, waiting for [`LoopShared::release`]: the thread has not polled yet and
    /// nothing in the inbox was taken.
    Held,
    /// Dispatching.
    Open,
    /// Stopped before it was released: the thread exits without dispatching anything,
    /// dropping what was queued.
    Abandoned,
}

/// The commands, and the waker while the loop runs.
struct Inbox {
    /// Kept under the inbox's lock, so whoever sees `Held` there acts before the loop
    /// can take a command.
    gate: Gate,
    commands: Vec<Command>,
    /// Dropped when the loop exits: the waker owns an OS resource (an eventfd, a pipe),
    /// and this `LoopShared` can outlive the loop by a long time (connections reach it,
    /// and the connection map frees them lazily through epoch-deferred destruction).
    waker: Option<Arc<dyn Waker>>,
}

impl LoopShared {
    /// A loop's shared part on the system clock (the unit tests' loops).
    #[cfg(test)]
    pub(crate) fn new(index: usize, waker: Arc<dyn Waker>, held: bool) -> Arc<Self> {
        Self::with_clock(index, waker, held, Clock::system())
    }

    /// A loop's shared part, its deadlines measured against `clock` (its driver's).
    pub(crate) fn with_clock(
        index: usize,
        waker: Arc<dyn Waker>,
        held: bool,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(Self {
            id: NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed),
            index,
            inbox: Mutex::new(Inbox {
                gate: if held { Gate::Held } else { Gate::Open },
                commands: Vec::new(),
                waker: Some(waker),
            }),
            notified: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            local: AtomicBool::new(false),
            gate_opened: Condvar::new(),
            clock,
            counters: Default::default(),
            stats: LoopStats::default(),
        })
    }

    /// The loop's clock: deadlines for this loop (timers scheduled from any thread) are
    /// measured against it.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The loop's position in its event loop (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether the calling thread is this loop's thread.
    pub fn is_current(&self) -> bool {
        CURRENT_LOOP.with(|c| c.get()) == self.id
    }

    /// Whether the calling thread runs any loop (so it must never block on one).
    pub fn on_any_loop() -> bool {
        CURRENT_LOOP.with(|c| c.get()) != 0
    }

    pub(crate) fn enter(self: &Arc<Self>) {
        CURRENT_LOOP.with(|c| c.set(self.id));
        CURRENT_SHARED.with(|c| *c.borrow_mut() = Some(Arc::clone(self)));
    }

    pub(crate) fn leave() {
        CURRENT_LOOP.with(|c| c.set(0));
        LOCAL_FLUSH.with(|l| l.borrow_mut().clear());
        CURRENT_SHARED.with(|c| c.borrow_mut().take());
    }

    /// The loop running on the calling thread, if any.
    pub fn current() -> Option<Arc<LoopShared>> {
        CURRENT_SHARED.with(|c| c.borrow().clone())
    }

    /// Whether the loop has exited (its thread returned or is returning).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Queues a command; wakes the loop unless the caller is the loop itself or a wake is
    /// already on its way. Returns `false` (and drops the command) if the loop is gone.
    pub(crate) fn push(&self, command: Command) -> bool {
        let waker = {
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            if self.is_stopped() {
                return false;
            }
            inbox.commands.push(command);
            if self.is_current() {
                self.local.store(true, Ordering::Relaxed);
                None
            } else if !self.notified.swap(true, Ordering::AcqRel) {
                inbox.waker.clone()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            if let Err(e) = waker.wake() {
                log::error!("waking loop {} failed: {e}", self.index);
            }
        }
        true
    }

    /// Asks the loop to flush `conn`, which has bytes queued: from the loop's own thread
    /// straight onto its flush list (taken in the same turn), from any other thread
    /// through the inbox. `false` if the loop is gone.
    pub(crate) fn push_flush(&self, conn: &Arc<ConnShared>) -> bool {
        if !self.is_current() {
            return self.push(Command::Flush(Arc::clone(conn)));
        }
        if self.is_stopped() {
            return false;
        }
        LOCAL_FLUSH.with(|l| l.borrow_mut().push(Arc::clone(conn)));
        true
    }

    /// Moves the flushes asked for on this (the loop's) thread into `into`.
    pub(crate) fn take_local_flushes(into: &mut Vec<Arc<ConnShared>>) {
        LOCAL_FLUSH.with(|l| std::mem::swap(&mut *l.borrow_mut(), into));
    }

    /// Whether sends on this (the loop's) thread asked for flushes not taken yet.
    pub(crate) fn has_local_flushes() -> bool {
        LOCAL_FLUSH.with(|l| !l.borrow().is_empty())
    }

    /// Asks the loop to stop. Idempotent. A loop still held (never released) is
    /// abandoned: its thread exits without dispatching anything.
    pub fn request_stop(&self) {
        self.open_gate(Gate::Abandoned);
        self.push(Command::Stop);
    }

    /// Lets a held loop dispatch (mill-io's `EventLoop::run`); nothing for a loop
    /// released or stopped before.
    pub fn release(&self) {
        self.open_gate(Gate::Open);
    }

    fn open_gate(&self, to: Gate) {
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        if inbox.gate == Gate::Held {
            inbox.gate = to;
            self.gate_opened.notify_all();
        }
    }

    /// Whether the loop is held: built, not yet released nor stopped. Such a loop holds
    /// no connection and has taken no command.
    pub fn is_held(&self) -> bool {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner()).gate == Gate::Held
    }

    /// Blocks the loop thread while the loop is held; `true` if it may dispatch, `false`
    /// if it was stopped before being released.
    pub(crate) fn wait_gate(&self) -> bool {
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        while inbox.gate == Gate::Held {
            inbox = self
                .gate_opened
                .wait(inbox)
                .unwrap_or_else(|e| e.into_inner());
        }
        inbox.gate == Gate::Open
    }

    /// Queues a command like [`push`](Self::push); `Some(true)` if the loop is held (it
    /// takes the command once released), `None` if the loop is gone.
    pub(crate) fn push_held(&self, command: Command) -> Option<bool> {
        let held = self.is_held();
        // A loop seen held may be released meanwhile: then the command is simply taken
        // at its first turn, and a caller that does not wait loses nothing.
        self.push(command).then_some(held)
    }

    /// On a held loop, takes the queued commands `pick` selects out of the inbox (to be
    /// dropped by the caller, outside the lock) and returns them; `None` if the loop is
    /// not held (it takes its commands itself).
    pub(crate) fn withdraw_if_held(
        &self,
        mut pick: impl FnMut(&Command) -> bool,
    ) -> Option<Vec<Command>> {
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        if inbox.gate != Gate::Held {
            return None;
        }
        let (taken, kept) = std::mem::take(&mut inbox.commands)
            .into_iter()
            .partition(|c| pick(c));
        inbox.commands = kept;
        Some(taken)
    }

    /// Takes every queued command (the loop calls this after each poll).
    pub(crate) fn drain(&self, into: &mut Vec<Command>) {
        // Reset before taking, so a command pushed after the take wakes the loop again.
        self.notified.store(false, Ordering::Release);
        self.local.store(false, Ordering::Relaxed);
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut inbox.commands, into);
    }

    /// Commands left behind when the loop exits are dropped (closing their sockets), and
    /// so is the waker: nothing wakes a loop that has exited.
    pub(crate) fn close_inbox(&self) -> Vec<Command> {
        let (commands, waker) = {
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            self.stopped.store(true, Ordering::Release);
            (std::mem::take(&mut inbox.commands), inbox.waker.take())
        };
        drop(waker);
        commands
    }

    /// Whether the loop's own thread queued commands since it last drained the inbox
    /// (from a timer or posted closure, say): the loop polls without blocking then.
    pub(crate) fn has_local_work(&self) -> bool {
        self.local.load(Ordering::Relaxed)
    }

    /// Queues a closure to run on the loop; `false` if the loop is gone.
    pub(crate) fn post(&self, f: Box<dyn FnOnce() + Send>) -> bool {
        self.push(Command::Post(f))
    }

    /// Counts a user timer that ran.
    pub(crate) fn count_timer_fired(&self, panicked: bool) {
        bump(&self.stats.timers_fired);
        if panicked {
            bump(&self.stats.task_panics);
        }
    }

    /// Counts a posted closure that ran.
    pub(crate) fn count_task_run(&self, panicked: bool) {
        bump(&self.stats.tasks_run);
        if panicked {
            bump(&self.stats.task_panics);
        }
    }

    /// Counts a new user timer as pending.
    pub(crate) fn timer_started(&self) {
        self.stats.pending_timers.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a user timer's count as pending (a one-shot timer started, a timer was
    /// cancelled, or it was dropped unfired).
    pub(crate) fn timer_finished(&self) {
        self.stats.pending_timers.fetch_sub(1, Ordering::Relaxed);
    }

    /// User timers of this loop scheduled and not over yet: one-shot timers that have not
    /// started, repeating timers not cancelled. A timer leaves the count when it starts
    /// (one-shot), is cancelled, or is dropped because the loop stopped.
    pub fn pending_timers(&self) -> usize {
        self.stats.pending_timers.load(Ordering::Relaxed)
    }

    pub(crate) fn note_timer_cancelled(&self) {
        self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Timers cancelled since the last [`reset_cancelled_timers`](Self::reset_cancelled_timers).
    pub(crate) fn cancelled_timers(&self) -> usize {
        self.stats.cancelled.load(Ordering::Relaxed)
    }

    pub(crate) fn reset_cancelled_timers(&self) {
        self.stats.cancelled.store(0, Ordering::Relaxed);
    }

    /// This loop's counters: its driver's (as last published) and its own.
    pub fn loop_counters(&self) -> LoopMetrics {
        let s = &self.stats;
        LoopMetrics {
            driver: self.counters(),
            connections: s.connections.load(Ordering::Relaxed),
            timers_fired: s.timers_fired.load(Ordering::Relaxed),
            tasks_run: s.tasks_run.load(Ordering::Relaxed),
            task_panics: s.task_panics.load(Ordering::Relaxed),
            timer_entries: s.timer_entries.load(Ordering::Relaxed),
        }
    }

    /// Publishes the driver's counters and the number of connections the loop holds.
    /// Publishes how many entries the loop's timer heap holds.
    pub(crate) fn publish_timer_entries(&self, entries: usize) {
        self.stats.timer_entries.store(entries, Ordering::Relaxed);
    }

    pub(crate) fn publish_counters(&self, c: &DriverCounters, connections: usize) {
        self.stats.connections.store(connections, Ordering::Relaxed);
        let values = [
            c.enters,
            c.sqes,
            c.cqes,
            c.enobufs,
            c.cq_overflows,
            c.rearms,
            c.events,
            c.wakeups,
            c.recv_buffers_out,
        ];
        for (slot, v) in self.counters.iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The driver counters as last published by the loop.
    pub fn counters(&self) -> DriverCounters {
        let v: Vec<u64> = self
            .counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        DriverCounters {
            enters: v[0],
            sqes: v[1],
            cqes: v[2],
            enobufs: v[3],
            cq_overflows: v[4],
            rearms: v[5],
            events: v[6],
            wakeups: v[7],
            recv_buffers_out: v[8],
        }
    }
}

/// Adds one to a counter only its loop thread writes (a load and a store: no locked
/// instruction on the hot path).
#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}
